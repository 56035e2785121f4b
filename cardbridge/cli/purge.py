"""`flask purge`: remove the personal data cardbridge no longer needs (docs/privacy.md)."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from cardbridge.extensions import db
from cardbridge.retention import purge as purging


@click.command("purge")
@click.option("--dry-run", is_flag=True, help="Print what would go (counts per table and "
              "column, and files); change nothing.")
@click.option("--batch-size", type=click.IntRange(1), default=purging.BATCH_SIZE,
              show_default=True, help="Customers per transaction.")
@click.option("--max-batches", type=click.IntRange(1), default=None,
              help="Stop after this many batches; run again to continue.")
@with_appcontext
def purge_command(dry_run: bool, batch_size: int, max_batches: int | None) -> None:
    """After CUTOVER_DATE + RETENTION_DAYS, remove names, emails, card details, email contents
    and IPs; keep counts, statuses, Stripe ids and the audit trail. Resumable; safe to repeat."""
    try:
        purging.check_allowed(current_app.config, purging.utcnow().date())
    except purging.PurgeRefused as exc:
        raise click.ClickException(f"purge refused: {exc}") from exc
    bar = None

    def started(total: int) -> None:
        nonlocal bar
        if sys.stdout.isatty() and total:
            bar = click.progressbar(length=total, label="customers" + (" (dry run)"
                                                                      if dry_run else ""))
            bar.__enter__()

    try:
        report = purging.purge(dry_run=dry_run, batch_size=batch_size, max_batches=max_batches,
                               commit=db.session.commit, started=started,
                               progress=lambda n: bar.update(n) if bar else None)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if dry_run:
        db.session.rollback()
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{'dry run: ' if dry_run else ''}{report.customers} customers in "
               f"{report.batches} batches; {verb}:")
    shown = {k: v for k, v in sorted(report.counts.items()) if v}
    for key, count in shown.items():
        click.echo(f"  {key}: {count}")
    if not shown:
        click.echo("  nothing: no personal data is left to purge")
    if not report.finished:
        click.echo("stopped before the end (--max-batches): run `flask purge` again to continue")
    elif not dry_run and shown:
        click.echo("recorded in the audit trail (action 'purge')")
