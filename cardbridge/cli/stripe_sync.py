"""`flask stripe …`: cardbridge and Stripe agreeing (SPEC "Truth with Stripe")."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import AppGroup

from cardbridge.payments import replay as replaying
from cardbridge.stripe_gateway import GatewayError

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
