"""Migration status: which migrated cards are usable at cutover, the report, and the export CSV.

A card is usable through the last day of its expiry month: 12/2026 is usable for a cutover on
2026-12-31 and not on 2027-01-01. A card whose expiry the mapping does not give (Stripe-to-Stripe
copies carry none) is counted as usable: nothing says it expires before cutover, and the report
shows how many `ready` customers rest on such cards so the operator can check them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TextIO

from flask import current_app
from sqlalchemy import and_, case, exists, func, not_, or_, select, update

from cardbridge import csv_safe
from cardbridge.customers.statuses import live_link_clause, sweep_expired_invitations
from cardbridge.extensions import db
from cardbridge.models import STATUSES, Customer, ImportRun, MigratedCard, SavedPaymentMethod
from cardbridge.models.types import utcnow

EXPORT_HEADER = ("legacy_customer_id", "stripe_customer_id", "status", "payment_method_id",
                 "updated_at")
REASONS = ("not_in_mapping", "no_cards", "cards_expired")
REASON_LABELS = {
    "not_in_mapping": "not in the mapping file",
    "no_cards": "mapped without cards",
    "cards_expired": "every card expires before cutover",
}


def cutover_date(now: datetime | None = None) -> date:
    """CUTOVER_DATE, or today (UTC) when it is not set."""
    return current_app.config.get("CUTOVER_DATE") or (now or utcnow()).date()


def month_index(year: int, month: int) -> int:
    return year * 12 + month


def card_usable(exp_month: int | None, exp_year: int | None, cutover: date) -> bool:
    if exp_month is None or exp_year is None:
        return True
    return month_index(exp_year, exp_month) >= month_index(cutover.year, cutover.month)


def usable_card_condition(cutover: date):
    """SQL twin of card_usable over MigratedCard columns."""
    return or_(
        MigratedCard.exp_year.is_(None),
        MigratedCard.exp_month.is_(None),
        MigratedCard.exp_year * 12 + MigratedCard.exp_month
        >= month_index(cutover.year, cutover.month),
    )


def usable_card_clause(cutover: date):
    """SQL: this customer has a migrated card usable at `cutover`."""
    return exists().where(MigratedCard.customer_id == Customer.id, usable_card_condition(cutover))


def refresh_statuses(now: datetime | None = None) -> dict[str, int]:
    """Bring stored statuses in line with links and the cutover date. Safe to run any time.

    Expired invitations go back to needs_update; a `ready` customer whose cards no longer
    reach the cutover (the date moved, or "today" passed their expiry month) needs a card
    again; a customer waiting for a card whose migrated card does reach it is `ready`.
    `updated` is never touched.
    """
    now = now or utcnow()
    cutover = cutover_date(now)
    usable = usable_card_clause(cutover)
    moved = {"invitations_expired": sweep_expired_invitations(now)}

    def run(where, status) -> int:
        result = db.session.execute(
            update(Customer).where(*where).values(status=status)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount or 0

    live = live_link_clause(now)
    moved["ready_to_invited"] = run((Customer.status == "ready", ~usable, live), "invited")
    moved["ready_to_needs_update"] = run((Customer.status == "ready", ~usable), "needs_update")
    moved["now_ready"] = run(
        (Customer.status.in_(("needs_update", "invited")),
         Customer.stripe_customer_id.is_not(None), usable),
        "ready",
    )
    return moved


def _reason_expression():
    has_cards = exists().where(MigratedCard.customer_id == Customer.id)
    return case(
        (Customer.mapped_at.is_(None), "not_in_mapping"),
        (has_cards, "cards_expired"),
        else_="no_cards",
    )


def needs_update_reason(customer: Customer) -> str | None:
    """Why this customer needs a card (one of REASONS), or None if they do not."""
    if customer.status not in ("needs_update", "invited"):
        return None
    return db.session.execute(
        select(_reason_expression()).where(Customer.id == customer.id)
    ).scalar_one()


def _last_run(kind: str) -> dict | None:
    run = db.session.execute(
        select(ImportRun).where(ImportRun.kind == kind, ImportRun.status == "succeeded")
        .order_by(ImportRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    if run is None:
        return None
    return {"run": run.id, "file_name": run.file_name, "format": run.format,
            "finished_at": _iso(run.finished_at), "rows_not_applied": run.error_count}


def status_report(now: datetime | None = None, *, refresh: bool = True) -> dict:
    """The SPEC object (`total`, `by_status`) plus reasons, cutover and the last imports.

    With `refresh` (the default) statuses are brought up to date first, so the caller should
    commit afterwards; the console may pass refresh=False for a read-only view.
    """
    now = now or utcnow()
    cutover = cutover_date(now)
    if refresh:
        refresh_statuses(now)
    by_status = dict.fromkeys(STATUSES, 0)
    for status, count in db.session.execute(
        select(Customer.status, func.count()).group_by(Customer.status)
    ):
        by_status[status] = by_status.get(status, 0) + count
    reason = _reason_expression()
    reasons = dict.fromkeys(REASONS, 0)
    for name, count in db.session.execute(
        select(reason, func.count()).where(Customer.status == "needs_update").group_by(reason)
    ):
        reasons[name] = count
    unknown_expiry_only = db.session.execute(
        select(func.count()).select_from(Customer).where(
            Customer.status == "ready",
            exists().where(MigratedCard.customer_id == Customer.id,
                           or_(MigratedCard.exp_year.is_(None), MigratedCard.exp_month.is_(None))),
            not_(exists().where(
                MigratedCard.customer_id == Customer.id,
                and_(MigratedCard.exp_year.is_not(None), MigratedCard.exp_month.is_not(None)),
                usable_card_condition(cutover),
            )),
        )
    ).scalar_one()
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "needs_update_reasons": reasons,
        "ready_on_cards_of_unknown_expiry": unknown_expiry_only,
        "cutover_date": cutover.isoformat(),
        "generated_at": _iso(now),
        "last_imports": {"roster": _last_run("roster"), "mapping": _last_run("mapping")},
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def export_rows(now: datetime | None = None):
    """Yield one export row per customer, oldest first, streamed from the database.

    payment_method_id is the card the customer saved through cardbridge (the newest one),
    else their best migrated card usable at cutover (latest expiry), else empty.
    """
    cutover = cutover_date(now)
    saved = (
        select(SavedPaymentMethod.stripe_payment_method_id)
        .where(SavedPaymentMethod.customer_id == Customer.id)
        .order_by(SavedPaymentMethod.created_at.desc(), SavedPaymentMethod.id.desc())
        .limit(1).scalar_subquery()
    )
    migrated = (
        select(MigratedCard.stripe_id)
        .where(MigratedCard.customer_id == Customer.id, usable_card_condition(cutover))
        .order_by(MigratedCard.exp_year.is_(None), MigratedCard.exp_year.desc(),
                  MigratedCard.exp_month.desc(), MigratedCard.id)
        .limit(1).scalar_subquery()
    )
    payment_method = case(
        (Customer.status == "updated", func.coalesce(saved, migrated)),
        (Customer.status == "ready", migrated),
        else_=None,
    )
    stmt = (
        select(Customer.legacy_id, Customer.stripe_customer_id, Customer.status,
               payment_method, Customer.updated_at)
        .order_by(Customer.id)
        .execution_options(yield_per=5000)
    )
    for legacy_id, stripe_id, status, pm_id, updated_at in db.session.execute(stmt):
        yield (legacy_id, stripe_id or "", status, pm_id or "", _iso(updated_at) or "")


def export_csv(fh: TextIO, now: datetime | None = None) -> int:
    """Write the SPEC export CSV to `fh` (header first); returns the number of customers."""
    writer = csv_safe.Writer(fh)
    writer.writerow(EXPORT_HEADER)
    count = 0
    for row in export_rows(now):
        writer.writerow(row)
        count += 1
    return count
