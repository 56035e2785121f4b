"""`flask prices import` and `flask subscriptions …` (SPEC "Subscriptions: begin charging")."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from flask import current_app
from tqdm import tqdm

from cardbridge.cli.imports import _echo_result, run_file
from cardbridge.extensions import db
from cardbridge.imports.files import ImportFileError
from cardbridge.staff import audit
from cardbridge.stripe_gateway import GatewayError, StripeGateway
from cardbridge.subscriptions import apply as applying
from cardbridge.subscriptions import guard, loading, planner, revenue

prices_cli = click.Group("prices", help="The legacy plan → Stripe price map.")
subscriptions_cli = click.Group("subscriptions", help="Move legacy subscriptions to Stripe.")


def _gateway() -> StripeGateway:
    return StripeGateway.from_config(current_app.config, rate_limit_retries=8)


@prices_cli.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Abort the whole file if any row cannot be applied.")
def prices_import(path: Path, strict: bool) -> None:
    """Load the price map (legacy_plan_id,currency,stripe_price_id); each price is checked."""
    gateway = _gateway()
    result = run_file(path, lambda bar: loading.import_prices(path, gateway=gateway, strict=strict,
                                                           progress=bar))
    c = result.counts
    _echo_result(result, [f"prices: {c.get('added', 0):,} added, {c.get('changed', 0):,} "
                          f"changed, {c.get('unchanged', 0):,} unchanged"])


@subscriptions_cli.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--timezone", "zone", help="IANA zone for times given without an offset.")
@click.option("--charge-hour", type=click.IntRange(0, 23), default=10, show_default=True,
              help="With --timezone: the local hour a bare date means.")
@click.option("--strict", is_flag=True, help="Abort the whole file if any row cannot be applied.")
def subscriptions_import(path: Path, zone: str | None, charge_hour: int, strict: bool) -> None:
    """Load the legacy subscriptions CSV (idempotent; prints counts)."""
    result = run_file(path, lambda bar: loading.import_subscriptions(
        path, strict=strict, zone=zone, charge_hour=charge_hour, progress=bar))
    c = result.counts
    _echo_result(result, [f"subscriptions: {c.get('added', 0):,} new, {c.get('changed', 0):,} "
                          f"changed, {c.get('unchanged', 0):,} unchanged"])


def plan_summary() -> dict:
    return {"by_state": revenue.by_state(), "mrr_by_state": revenue.mrr_by_state(),
            "review_reasons": dict(revenue.reasons())}


def echo_summary(data: dict) -> None:
    click.echo(f"  {'state':<18}{'subscriptions':>14}  monthly recurring revenue")
    for state, count in data["by_state"].items():
        mrr = ", ".join(revenue.money(amount, cur) for cur, amount in
                        sorted(data["mrr_by_state"][state].items())) or "–"
        click.echo(f"  {state:<18}{count:>14,}  {mrr}")
    if data["review_reasons"]:
        click.echo("needs review, by reason")
        for reason, count in data["review_reasons"].items():
            click.echo(f"  {count:>8,}  {reason}")


@subscriptions_cli.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def subscriptions_plan(as_json: bool) -> None:
    """Decide each subscription's state and start; counts, reasons and MRR per state."""
    try:
        changes = planner.plan(_gateway())
        audit.record("cli", "subscription.plan", details=dict(changes))
        db.session.commit()
    except GatewayError as exc:
        db.session.rollback()
        raise click.ClickException(f"Stripe: {exc}; the plan is unchanged") from None
    data = plan_summary()
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"planned: {changes.get('changed', 0):,} changed, {changes.get('same', 0):,} "
               "unchanged")
    echo_summary(data)


@subscriptions_cli.command("apply")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
def subscriptions_apply(limit: int | None) -> None:
    """Create the planned ones on Stripe, paced to STRIPE_WRITE_RATE; safe to kill and re-run."""
    bar = None
    if sys.stderr.isatty():
        bar = tqdm(desc="applying", unit="sub", file=sys.stderr, leave=False,
                   dynamic_ncols=True)
    clock = time.perf_counter()

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    report = applying.apply(_gateway(), limit=limit, progress=progress if bar else None)
    if bar is not None:
        bar.close()
    audit.record("cli", "subscription.apply", details=dict(report.counts))
    db.session.commit()
    seconds = time.perf_counter() - clock
    click.echo(f"applied in {seconds:.1f} s ({report.rate:.1f} creates/s): " + (", ".join(
        f"{n:,} {k}" for k, n in sorted(report.counts.items())) or "nothing to apply"))
    if report.counts.get("stripe_unavailable") or report.counts.get("rate_limited"):
        raise click.ClickException("some were not created (Stripe busy or down): run it again")


@subscriptions_cli.command("cancel-list")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
def subscriptions_cancel_list(path: str) -> None:
    """CSV of subscriptions on Stripe whose legacy cancellation is not confirmed."""
    if path == "-":
        count = guard.cancel_list(sys.stdout)
    else:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            count = guard.cancel_list(fh)
    click.echo(f"{count:,} subscription(s) to cancel in the legacy system", err=path == "-")


@subscriptions_cli.command("confirm-cancelled")
@click.argument("path", type=click.Path(path_type=Path))
def subscriptions_confirm_cancelled(path: Path) -> None:
    """Record that the legacy processor cancelled the listed legacy_subscription_id values."""
    try:
        counts = guard.confirm_cancelled(path, actor="cli")
    except ImportFileError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    problems = counts.pop("problems")
    click.echo(f"{counts.get('confirmed', 0):,} confirmed, "
               f"{counts.get('already_confirmed', 0):,} already confirmed, "
               f"{len(problems):,} not found")
    for line, legacy_id, why in problems[:10]:
        click.echo(f"  line {line}: {legacy_id}: {why}")


@subscriptions_cli.command("export")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
def subscriptions_export(path: str) -> None:
    """SPEC's subscriptions CSV (one row per legacy subscription)."""
    _write(path, revenue.export_csv, "subscriptions")


@subscriptions_cli.command("export-toolkit")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
def subscriptions_export_toolkit(path: str) -> None:
    """The planned ones as Stripe's subscription migration toolkit CSV."""
    _write(path, revenue.export_toolkit, "planned subscriptions")


def _write(path: str, write, what: str) -> None:
    if path == "-":
        click.echo(f"exported {write(sys.stdout):,} {what}", err=True)
        return
    partial = f"{path}.partial"
    with open(partial, "w", newline="", encoding="utf-8") as fh:
        count = write(fh)
    Path(partial).replace(path)
    click.echo(f"exported {count:,} {what} to {path}")
