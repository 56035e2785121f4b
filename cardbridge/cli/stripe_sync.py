"""`flask stripe …`: cardbridge and Stripe agreeing (SPEC "Truth with Stripe")."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from cardbridge.payments import drift
from cardbridge.payments import replay as replaying
from cardbridge.stripe_gateway import GatewayError, StripeGateway
from cardbridge.subscriptions.budget import Budget

stripe_cli = AppGroup("stripe", help="Bring cardbridge and Stripe into agreement.")


@stripe_cli.command("replay")
@click.option("--since", "since_text", metavar="ISO",
              help="Read events from this moment (ISO 8601, UTC unless it says otherwise); "
                   "default: where the last replay got to, else all Stripe keeps (30 days).")
def replay_command(since_text: str | None) -> None:
    """Apply Stripe's events the webhook missed, exactly as the webhook would; safe to repeat."""
    since = None
    if since_text:
        try:
            since = replaying.parse_since(since_text)
        except ValueError as exc:
            raise click.ClickException(f"--since {since_text!r} is not an ISO date") from exc
    gateway = current_app.extensions["stripe_gateway"]
    bar = None

    def started(total: int) -> None:
        nonlocal bar
        if sys.stdout.isatty() and total:
            bar = click.progressbar(length=total, label="applying events")
            bar.__enter__()

    try:
        report = replaying.replay(gateway, since, started=started,
                                  progress=lambda n: bar.update(n) if bar else None)
    except GatewayError as exc:
        raise click.ClickException(f"Stripe did not answer: {exc}; nothing more was read, "
                                   "run it again") from exc
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(f"events seen {report.seen}: applied {report.applied}, already processed "
               f"{report.already_processed}, ignored types {report.ignored}, deferred "
               f"{report.deferred}")
    for outcome, count in sorted(report.outcomes.items()):
        click.echo(f"  {outcome}: {count}")
    if report.deferred:
        click.echo("deferred events are stored; the worker applies them when Stripe answers")


@stripe_cli.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--fix", is_flag=True,
              help="Re-apply what cardbridge owns (its defaults, its ledger states); a newer "
                   "card set on Stripe wins and is recorded.")
@click.option("--restart", is_flag=True,
              help="Start from the first customer even if the last scan did not finish.")
def reconcile_command(as_json: bool, fix: bool, restart: bool) -> None:
    """Compare every customer cardbridge touched with Stripe and list each difference."""
    gateway = StripeGateway.from_config(current_app.config, rate_limit_retries=8)
    try:
        report = drift.reconcile(gateway, Budget.from_config(), fix=fix, actor="cli",
                                 restart=restart)
    except GatewayError as exc:
        raise click.ClickException(f"Stripe did not answer: {exc}; what was checked is kept, "
                                   "run it again to continue from there") from exc
    rows = drift.findings(("open", "fixed", "accepted"), scan_id=report.scan.id)
    if as_json:
        click.echo(json.dumps({"scan": report.scan.id, "resumed": report.resumed,
                               "counts": report.scan.counts,
                               "open_total": drift.open_count(),
                               "differences": [drift.as_dict(f) for f in rows]}, indent=2))
        return
    if report.resumed:
        click.echo(f"scan {report.scan.id} resumed after customer #{report.resumed_after}")
    for f in rows:
        what = f" {f.object_id}" if f.object_id else ""
        click.echo(f"[{f.status}] {f.customer.legacy_id} {f.kind}{what}: "
                   f"ours {f.ours or '-'}, Stripe {f.theirs or '-'} — "
                   f"{drift.MEANINGS.get(f.kind, f.kind)}")
    counts = report.scan.counts or {}
    click.echo(f"customers checked {counts.get('customers', 0)}, differences "
               f"{len(rows)}, fixed {counts.get('fixed', 0)}, kept from Stripe "
               f"{counts.get('accepted', 0)}; open now {drift.open_count()}")
