"""`flask import-customers`, `flask import-mapping`, `flask report` and `flask export`."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from cardbridge.closeout import report as final_report
from cardbridge.customers import reporting
from cardbridge.extensions import db
from cardbridge.imports import service as imports
from cardbridge.imports.mapping_formats import FORMAT_LABELS
from cardbridge.models.types import utcnow
from cardbridge.stripe_gateway import GatewayError
from cardbridge.subscriptions import revenue

SHOW_PROBLEMS = 10


class _ProgressBar:
    """tqdm over the file's bytes, with rows and rows/s; only drawn on a terminal."""

    def __init__(self, label: str, total: int):
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                        file=sys.stderr, leave=False, dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| "
                                   "{n_fmt}B/{total_fmt}B{postfix}")

    def __call__(self, rows: int, done: int, total: int) -> None:
        rate = rows / max(time.perf_counter() - self.started, 1e-6)
        self.bar.set_postfix_str(f"{rows:,} rows · {rate:,.0f} rows/s", refresh=False)
        self.bar.update(max(done - self.bar.n, 0))

    def close(self) -> None:
        self.bar.close()


def _run_import(kind: str, path: Path, strict: bool) -> imports.ImportResult:
    service = imports.import_roster if kind == "roster" else imports.import_mapping
    return run_file(path, lambda bar: service(path, strict=strict, progress=bar))


def run_file(path: Path, run) -> imports.ImportResult:
    """`run(progress)` in one transaction: committed, or rolled back with a one-line reason
    (a failed file is still recorded as a run). A bar over the file's bytes on a terminal."""
    bar = None
    if sys.stderr.isatty() and path.is_file():
        bar = _ProgressBar(path.name, path.stat().st_size)
    try:
        result = run(bar)
        db.session.commit()
    except imports.ImportFileError as exc:
        db.session.rollback()
        run = imports.failed_run(exc)
        if run is not None:
            db.session.add(run)
            db.session.commit()
        raise click.ClickException(str(exc)) from None
    except GatewayError as exc:
        db.session.rollback()
        raise click.ClickException(f"{path.name}: Stripe: {exc}; nothing imported") from None
    except SQLAlchemyError as exc:
        db.session.rollback()
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise click.ClickException(f"{path.name}: database error, nothing imported: {reason}"
                                   ) from None
    finally:
        if bar is not None:
            bar.close()
    return result


def _echo_result(result: imports.ImportResult, lines: list[str]) -> None:
    if result.skipped:
        click.echo(f"{result.file_name}: {result.message} (run #{result.run_id})")
        return
    rate = result.rows / result.seconds if result.seconds else 0
    click.echo(f"{result.file_name} ({FORMAT_LABELS.get(result.format, result.format)}): "
               f"{result.rows:,} rows in {result.seconds:.1f} s ({rate:,.0f} rows/s), "
               f"run #{result.run_id}")
    for line in lines:
        click.echo(f"  {line}")
    if result.error_count:
        kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(_kinds(result).items()))
        click.echo(f"  not applied: {result.error_count:,} row(s) ({kinds}); "
                   f"all listed in {result.report_path}")
        for p in result.errors[:SHOW_PROBLEMS]:
            where = f"line {p.line}" if p.line else f"customer {p.customer!r}"
            click.echo(f"    {where}: {p.kind}: {p.problem}")
        if result.error_count > SHOW_PROBLEMS:
            click.echo(f"    … and {result.error_count - SHOW_PROBLEMS:,} more in the report")


def _kinds(result: imports.ImportResult) -> dict[str, int]:
    counts = result.counts
    kinds = {k: counts.get(f"problems_{k}", 0) for k in ("error", "conflict", "unknown")}
    return {k: n for k, n in kinds.items() if n} or {"error": result.error_count}


@click.command("import-customers")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Abort the whole file if any row cannot be applied.")
def import_customers(path: Path, strict: bool) -> None:
    """Load the legacy roster CSV (idempotent; prints counts)."""
    result = _run_import("roster", path, strict)
    c = result.counts
    _echo_result(result, [f"customers: {c.get('new', 0):,} new, {c.get('changed', 0):,} changed,"
                          f" {c.get('unchanged', 0):,} unchanged"])


@click.command("import-mapping")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Abort the whole file if any row cannot be applied.")
def import_mapping(path: Path, strict: bool) -> None:
    """Load Stripe's post-import mapping file: JSON or either CSV (idempotent; prints counts)."""
    result = _run_import("mapping", path, strict)
    c = result.counts
    _echo_result(result, [
        f"customers: {c.get('linked', 0):,} linked to Stripe, "
        f"{c.get('already_linked', 0):,} already linked",
        f"cards: {c.get('cards_new', 0):,} new, {c.get('cards_changed', 0):,} changed, "
        f"{c.get('cards_unchanged', 0):,} unchanged",
        "statuses of these customers: " + ", ".join(
            f"{c.get('status_' + s, 0):,} {s}" for s in ("ready", "needs_update", "invited",
                                                         "updated")),
    ])


def write_final(path: str, as_json: bool) -> None:
    reporting.refresh_statuses()
    db.session.commit()  # statuses up to date first, as the plain report does
    figures = final_report.gather()
    body = json.dumps(figures, indent=2) if as_json else final_report.render_html(figures)
    Path(path).write_text(body, encoding="utf-8")
    c = figures["customers"]["by_status"]
    click.echo(f"final report written to {path} ({len(body.encode()):,} bytes): "
               f"{figures['customers']['total']:,} customers, {c['ready']:,} ready, "
               f"{c['updated']:,} updated, {c['needs_update'] + c['invited']:,} without a card")


def echo_burn_down(series: dict, today, cutover: str) -> None:
    """Revenue at risk (waiting for a card or in review), now and a week and a month ago."""
    for cur, points in series.items():
        by_day = dict(points)
        then = [(label, by_day.get(today - timedelta(days=n))) for label, n in
                (("7 days ago", 7), ("30 days ago", 30))]
        past = ", ".join(f"{label} {revenue.money(v, cur)}" for label, v in then if v is not None)
        click.echo(f"revenue at risk ({cur.upper()}): {revenue.money(points[-1][1], cur)} a month"
                   f" now{'; ' + past if past else ''}; cutover {cutover}")


@click.command("report")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--final", "final", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the final report of the whole migration to this file (HTML; the "
                   "same figures as JSON with --json).")
def report(as_json: bool, final: str | None) -> None:
    """Migration status: customers per status, and why customers still need a card."""
    if final:
        return write_final(final, as_json)
    data = reporting.status_report()
    db.session.commit()  # the report first brings statuses up to date
    today = utcnow().date()
    series = revenue.at_risk_series(today)
    data["subscriptions"] = {
        "by_state": revenue.by_state(), "mrr_by_state": revenue.mrr_by_state(),
        "at_risk": {cur: points[-1][1] for cur, points in series.items()},
        "at_risk_by_day": {cur: [[day.isoformat(), n] for day, n in points]
                           for cur, points in series.items()},
    }
    if as_json:
        click.echo(json.dumps(data))
        return
    total = data["total"]

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%" if total else "    –"

    click.echo(f"Migration status · cutover {data['cutover_date']}")
    click.echo(f"  {'status':<16}{'customers':>12}{'share':>8}")
    for status, count in data["by_status"].items():
        click.echo(f"  {status:<16}{count:>12,}{pct(count):>8}")
    click.echo(f"  {'total':<16}{total:>12,}{pct(total):>8}")
    needs = data["by_status"].get("needs_update", 0)
    click.echo("")
    click.echo("needs_update, by reason")
    for reason, count in data["needs_update_reasons"].items():
        share = f"{100 * count / needs:5.1f}%" if needs else "    –"
        click.echo(f"  {reporting.REASON_LABELS[reason]:<36}{count:>10,}{share:>8}")
    if data["ready_on_cards_of_unknown_expiry"]:
        click.echo(f"\n{data['ready_on_cards_of_unknown_expiry']:,} ready customer(s) rest on "
                   "cards whose expiry the mapping does not give.")
    if any(data["subscriptions"]["by_state"].values()):
        click.echo("\nsubscriptions, by state (monthly recurring revenue)")
        for state, count in data["subscriptions"]["by_state"].items():
            mrr = ", ".join(revenue.money(amount, cur) for cur, amount in sorted(
                data["subscriptions"]["mrr_by_state"][state].items())) or "–"
            click.echo(f"  {state:<18}{count:>10,}  {mrr}")
        echo_burn_down(series, today, data["cutover_date"])
    for kind, run in data["last_imports"].items():
        if run:
            click.echo(f"last {kind} import: {run['file_name']} at {run['finished_at']} "
                       f"(run #{run['run']}, {run['rows_not_applied']:,} row(s) not applied)")


@click.command("export")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
def export(path: str) -> None:
    """Write legacy_customer_id,stripe_customer_id,status,payment_method_id,updated_at."""
    reporting.refresh_statuses()
    db.session.commit()
    if path == "-":
        count = reporting.export_csv(sys.stdout)
        click.echo(f"exported {count:,} customers", err=True)
        return
    partial = f"{path}.partial"
    try:
        with open(partial, "w", newline="", encoding="utf-8") as fh:
            count = reporting.export_csv(fh)
        os.replace(partial, path)  # the business never loads a half-written file
    except OSError as exc:
        if os.path.exists(partial):
            os.remove(partial)
        raise click.ClickException(f"{path}: {exc.strerror or exc}") from None
    click.echo(f"exported {count:,} customers to {path}")
