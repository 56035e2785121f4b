"""`flask links …` and `flask demo`."""

from __future__ import annotations

import click
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import or_, select

from cardbridge.cli.demo_data import seed
from cardbridge.email.emails import send_link_email
from cardbridge.extensions import db
from cardbridge.links.service import issue_link, revoke_links
from cardbridge.models import AuditEvent, Customer

links_cli = AppGroup("links", help="Make or revoke customer update links.")


def find_customer(ref: str) -> Customer:
    """A customer by legacy id or Stripe customer id, or a one-line error."""
    customer = db.session.execute(
        select(Customer).where(or_(Customer.legacy_id == ref, Customer.stripe_customer_id == ref))
    ).scalar_one_or_none()
    if customer is None:
        raise click.ClickException(f"no customer with id {ref!r}")
    return customer


@links_cli.command("create")
@click.argument("legacy_id")
@click.option("--send", is_flag=True, help="Also email the link to the customer.")
@click.option("--days", type=int, default=None,
              help="Days the link lives (default and most: LINK_MAX_AGE_DAYS).")
def links_create(legacy_id: str, send: bool, days: int | None) -> None:
    """Make a link for one customer; the URL is the last line printed."""

    customer = find_customer(legacy_id)
    try:
        issued = issue_link(customer, created_by="cli", channel="email" if send else "generated",
                            days=days)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    db.session.add(AuditEvent(actor="cli", action="link.generated", target=customer.legacy_id,
                              details={"link": issued.link.public_id, "send": send}))
    if send:

        send_link_email(customer, issued.link)
    db.session.commit()
    click.echo(f"customer {customer.legacy_id} <{customer.email}> status {customer.status}")
    click.echo(f"expires {issued.link.expires_at:%Y-%m-%d %H:%M} UTC"
               + (" · emailed" if send else ""))
    click.echo(issued.url)


@links_cli.command("revoke")
@click.argument("legacy_id")
def links_revoke(legacy_id: str) -> None:
    """Revoke every live link of that customer."""

    customer = find_customer(legacy_id)
    count = revoke_links(customer, by="cli")
    db.session.add(AuditEvent(actor="cli", action="link.revoked", target=customer.legacy_id,
                              details={"count": count}))
    db.session.commit()
    click.echo(f"revoked {count} link(s) of {customer.legacy_id}; status {customer.status}")


@click.command("demo")
@with_appcontext
@click.option("--links", "link_count", default=2, show_default=True,
              help="How many customer links to print.")
def demo(link_count: int) -> None:
    """Seed demo customers in every status and print customer links."""

    for line in seed(link_count):
        click.echo(line)


