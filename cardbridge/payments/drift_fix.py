"""`flask stripe reconcile --fix`: re-apply what cardbridge owns, never undo the business.

What cardbridge owns is the default it set (the card the customer saved, on the customer and on
each billable subscription) and its ledger. So:

- a default that is no longer the saved card is set back, unless Stripe's card is newer than
  the saved one: someone set it there on purpose after the customer saved theirs; it wins, and
  the finding is recorded as `accepted` (with a customer event and an audit row) and stays so
  while Stripe keeps that card;
- nothing is set back while the saved card is detached or the customer deleted (cardbridge
  cannot re-attach a detached card): those stay open for a person;
- a ledger subscription missing or cancelled on Stripe is not re-created (a cancellation may be
  a business decision): the ledger row goes to `needs_review` with the reason, as the webhook
  does for a schedule cancelled elsewhere; a schedule that started on Stripe makes its row
  `live`, as the webhook would have; any other state is left for a person.

Every change is in the audit trail (`drift.fixed`, `drift.accepted`). Writes take a slot of the
shared write budget; their idempotency keys name the scan, so a resumed scan repeats nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import Customer, CustomerEvent, DriftFinding, DriftScan, LegacySubscription
from cardbridge.staff import audit
from cardbridge.stripe_gateway import StripeGateway


def fix(finding: DriftFinding, diff, customer: Customer, gateway: StripeGateway, budget,
        scan: DriftScan, actor: str, now: datetime) -> str:
    """Act on one open finding; returns "fixed", "accepted" or "left"."""
    if finding.kind in ("default_changed", "subscription_default"):
        return _default(finding, diff, customer, gateway, budget, scan, actor, now)
    if finding.kind.startswith("ledger_"):
        return _ledger(finding, customer, actor, now)
    return "left"


def _blocked(customer: Customer) -> bool:
    """The saved card cannot be made the default again."""
    return db.session.execute(
        select(DriftFinding.id).where(DriftFinding.customer_id == customer.id,
                                      DriftFinding.kind.in_(("card_detached",
                                                             "customer_deleted")),
                                      DriftFinding.status == "open").limit(1)
    ).first() is not None


def _done(finding: DriftFinding, status: str, now: datetime) -> None:
    finding.status, finding.resolved_at = status, now


def _default(finding, diff, customer, gateway, budget, scan, actor, now) -> str:
    details = {"kind": finding.kind, "object": finding.object_id or None,
               "ours": finding.ours, "on_stripe": finding.theirs, "scan": scan.id}
    if diff.newer:
        _done(finding, "accepted", now)
        db.session.add(CustomerEvent(customer_id=customer.id, kind="stripe_card_kept", at=now,
                                     details=details))
        audit.record(actor, "drift.accepted", customer.legacy_id, details=details,
                     reason="a newer card set on Stripe wins")
        return "accepted"
    if _blocked(customer) or not finding.ours:
        return "left"
    budget.take("write")
    if finding.kind == "default_changed":
        gateway.set_customer_default(customer.stripe_customer_id, finding.ours,
                                     f"drift-{scan.id}")
    else:
        gateway.set_subscription_default(finding.object_id, finding.ours, f"drift-{scan.id}")
    _done(finding, "fixed", now)
    audit.record(actor, "drift.fixed", customer.legacy_id, details=details,
                 reason="the card the customer saved is the default again")
    return "fixed"


def _ledger(finding, customer, actor, now) -> str:
    sub = db.session.execute(select(LegacySubscription).where(
        LegacySubscription.legacy_id == finding.object_id)).scalar_one_or_none()
    if sub is None:
        return "left"
    details = {"kind": finding.kind, "subscription": sub.legacy_id, "was": sub.state,
               "ledger": finding.ours, "on_stripe": finding.theirs}
    theirs = finding.theirs or ""
    if finding.kind in ("ledger_missing", "ledger_cancelled"):
        what = "missing" if finding.kind == "ledger_missing" else "cancelled"
        sub.state, sub.reason = "needs_review", f"its Stripe subscription was {what} on Stripe"
    elif finding.kind == "ledger_state" and sub.state == "scheduled" \
            and theirs.startswith("started "):
        sub.state, sub.stripe_subscription_id = "live", theirs.split(" ", 1)[1]
        sub.live_at = sub.live_at or now
    else:
        return "left"
    sub.updated_at = now
    details["now"] = sub.state
    _done(finding, "fixed", now)
    audit.record(actor, "drift.fixed", customer.legacy_id, details=details,
                 reason="the ledger follows Stripe")
    return "fixed"
