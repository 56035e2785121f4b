"""`flask campaign …`, `flask worker`, `flask bounce …`: thin wrappers over the email services."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import func, select

from cardbridge.campaigns import service as campaigns
from cardbridge.delivery.queue import run_burst, run_consumer
from cardbridge.email.emails import mark_bounced, needs_human
from cardbridge.extensions import db
from cardbridge.models import AuditEvent, Email

campaign_cli = AppGroup("campaign", help="Email waves of customer links (reminders follow).")
bounce_cli = AppGroup("bounce", help="Addresses that bounce: stop mailing them, list them.")


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not a date and time like 2026-12-01T09:00Z: {value!r}") \
            from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@campaign_cli.command("send")
@click.option("--status", default="needs_update", show_default=True,
              type=click.Choice(["needs_update", "invited"]),
              help="Customers in this status who have no emailed live link yet.")
@click.option("--limit", type=int, default=None, help="At most this many customers.")
@click.option("--percent", type=click.IntRange(1, 100), default=None,
              help="At most this share of the customers in that status.")
@click.option("--at", "at", default=None, help="Send from this time (ISO 8601; UTC if no zone).")
@click.option("--rate", type=click.IntRange(1, None), default=None,
              help="Emails per minute for this wave (CAMPAIGN_RATE_PER_MINUTE caps all).")
@click.option("--dry-run", is_flag=True, help="Say who would be emailed; change nothing.")
def campaign_send(status: str, limit: int | None, percent: int | None, at: str | None,
                  rate: int | None, dry_run: bool) -> None:
    """Queue link emails for every customer in that status not yet emailed a live link."""

    when = _when(at)
    try:
        if dry_run:
            plan = campaigns.plan_wave(status, limit=limit, percent=percent)
            click.echo(f"dry run: would queue {len(plan.customer_ids)} link email(s) "
                       f"({plan.in_status} customer(s) {status}, {plan.eligible} not yet "
                       f"emailed a live link); nothing changed")
            return
        wave, plan = campaigns.launch_wave(status, created_by="cli", limit=limit,
                                           percent=percent, at=when, rate_per_minute=rate)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    db.session.add(AuditEvent(actor="cli", action="campaign.wave", target=f"wave:{wave.id}",
                              details={"status": status, "limit": limit, "percent": percent,
                                       "queued": wave.queued, "at": at, "rate": rate}))
    db.session.commit()
    click.echo(f"wave {wave.id}: queued {wave.queued} link email(s) ({plan.in_status} "
               f"customer(s) {status}, {plan.eligible} not yet emailed a live link)")
    pace = rate or current_app.config.get("CAMPAIGN_RATE_PER_MINUTE") or 0
    if wave.queued and pace:
        click.echo(f"throttled to {pace}/minute: about {-(-wave.queued // pace)} minute(s)")
    if when:
        click.echo(f"scheduled for {when:%Y-%m-%d %H:%M} UTC")
    click.echo("emails leave while `flask worker` runs (or at the next `flask worker --burst`)")


@campaign_cli.command("list")
def campaign_list() -> None:
    """Waves, newest first, with their funnel: sent → opened → started → updated."""

    rows = campaigns.wave_funnel()
    if not rows:
        click.echo("no waves yet")
        return
    click.echo("wave  created           status        queued   sent opened started updated")
    for r in rows:
        w = r["wave"]
        click.echo(f"{w.id:<5} {w.created_at:%Y-%m-%d %H:%M}  {w.status_filter:<13}"
                   f"{r['queued']:>6} {r['sent']:>6} {r['opened']:>6} {r['started']:>7} "
                   f"{r['updated']:>7}")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run what is due now, then exit (cron, tests).")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker threads per process, each with its own SMTP connection.")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (one per core spends every core; threads share one).")
@with_appcontext
def worker(burst: bool, workers: int, processes: int) -> None:
    """Run the task queue worker (emails, reminders)."""

    huey = current_app.extensions["huey"]
    if not burst:
        click.echo(f"worker: {processes} process(es) of {workers} thread(s) on the "
                   f"{huey.backend} queue; Ctrl-C stops")
        run_consumer(huey, workers=workers, processes=processes)
        return
    ran = run_burst(huey, workers=workers, processes=processes)
    counts = dict(db.session.execute(
        select(Email.status, func.count()).group_by(Email.status)
    ).all())
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("queued", "sending", "sent", "failed"))
    click.echo(f"burst: ran {ran} task(s); emails: {summary}")


@bounce_cli.command("mark")
@click.argument("email")
@click.option("--reason", default="marked by operator", show_default=True)
def bounce_mark(email: str, reason: str) -> None:
    """Stop all email to EMAIL and list its customers as needing a human."""

    try:
        bounce, cancelled = mark_bounced(email, source="cli", reason=reason)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    db.session.add(AuditEvent(actor="cli", action="email.bounced", target=bounce.address,
                              reason=reason, details={"cancelled": cancelled}))
    db.session.commit()
    click.echo(f"{bounce.address} marked bounced; {cancelled} queued email(s) cancelled")


@bounce_cli.command("list")
def bounce_list() -> None:
    """Customers whose email cannot reach them: bounced, or an email that failed."""

    rows = needs_human()
    if not rows:
        click.echo("nobody needs a human")
        return
    for row in rows:
        click.echo(f"{row.legacy_id}\t{row.email}\t{row.status}\t{row.reason}")
