"""The final record of a migration (`flask report --final PATH [--json]`): the figures a business
keeps to show its board and its auditors, gathered once, written as one self-contained HTML
file (inline styles and SVG charts, nothing fetched) or as the same figures in JSON.

Only counts, dates, amounts and Stripe's own words appear: no customer's name, email or card.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from flask import current_app, render_template
from sqlalchemy import distinct, func, select

from cardbridge.campaigns.service import wave_funnel
from cardbridge.customers import reporting
from cardbridge.customers.charts import bar_chart
from cardbridge.extensions import db
from cardbridge.models import (
    AuditEvent,
    Customer,
    CustomerEvent,
    ImportRun,
    InvoicePayment,
    Link,
    SavedPaymentMethod,
    Wave,
)
from cardbridge.models.drift import DriftFinding, DriftScan
from cardbridge.models.types import utcnow
from cardbridge.subscriptions import revenue

MOVED_STATES = ("live", "scheduled", "planned")
LOST_STATES = ("waiting_for_card", "needs_review", "held")
DRIFT_ORDER = ("fixed", "accepted", "open", "resolved")


def gather(now: datetime | None = None) -> dict:
    """Every figure of the report, JSON-ready (dates as ISO strings)."""
    now = now or utcnow()
    status = reporting.status_report(now, refresh=False)
    cards = _cards()
    subscriptions = {"by_state": revenue.by_state(), "mrr_by_state": revenue.mrr_by_state()}
    moved, lost = Counter(), Counter()
    for state, amounts in subscriptions["mrr_by_state"].items():
        for currency, amount in amounts.items():
            if state in MOVED_STATES:
                moved[currency] += amount
            elif state in LOST_STATES:
                lost[currency] += amount
    invoices = dict(db.session.execute(select(InvoicePayment.outcome, func.count())
                                       .group_by(InvoicePayment.outcome)).all())
    return {
        "company": current_app.config.get("COMPANY_NAME", ""),
        "generated_at": _iso(now),
        "cutover_date": status["cutover_date"],
        "customers": {"total": status["total"], "by_status": status["by_status"],
                      "needs_update_reasons": status["needs_update_reasons"]},
        "cards": cards,
        "waves": [{"id": row["wave"].id, "created_at": _iso(row["wave"].created_at),
                   **{k: row[k] for k in ("queued", "sent", "opened", "started", "updated")}}
                  for row in wave_funnel(limit=1000)],
        "subscriptions": {**subscriptions, "revenue_moved": dict(moved),
                          "revenue_lost": dict(lost), "invoices_paid": invoices.get("paid", 0),
                          "invoices_declined": invoices.get("declined", 0)},
        "drift": _drift(),
        "purge": _purge(),
        "timeline": _timeline(),
    }


def _cards() -> dict:
    saved = db.session.execute(select(func.count(distinct(SavedPaymentMethod.customer_id)))
                               ).scalar_one()
    via = dict(db.session.execute(select(SavedPaymentMethod.recorded_via, func.count())
                                  .group_by(SavedPaymentMethod.recorded_via)).all())
    ready = db.session.execute(select(func.count()).select_from(Customer)
                               .where(Customer.status == "ready")).scalar_one()
    same = db.session.execute(select(func.count(distinct(SavedPaymentMethod.customer_id)))
                              .where(SavedPaymentMethod.same_card_as == "migrated")).scalar_one()
    return {"migrated_by_stripe_usable": ready, "saved_through_cardbridge": saved,
            "saved_by_path": via, "same_card_as_migrated": same}


def _drift() -> dict:
    """Scans run, and the differences found: by what became of them and by kind."""
    found = dict(db.session.execute(select(DriftFinding.status, func.count())
                                     .group_by(DriftFinding.status)).all())
    # A fixed order (what cardbridge did first), never the database's grouping order.
    by_status = {s: found[s] for s in (*DRIFT_ORDER, *sorted(set(found) - set(DRIFT_ORDER)))
                 if s in found}
    by_kind = dict(sorted(db.session.execute(select(DriftFinding.kind, func.count())
                                             .group_by(DriftFinding.kind)).all()))
    scans, last = db.session.execute(select(func.count(DriftScan.id), func.max(
        DriftScan.finished_at)).where(DriftScan.finished_at.is_not(None))).one()
    return {"scans": scans, "last_scan_at": _iso(last), "found": sum(by_status.values()),
            "by_status": by_status, "by_kind": by_kind}


def _purge() -> dict:
    """The purge as its audit rows record it: customers, values removed, finished or not."""
    rows = db.session.execute(select(AuditEvent).where(AuditEvent.action == "purge")
                              .order_by(AuditEvent.at)).scalars().all()
    details = [row.details or {} for row in rows]
    return {"runs": len(rows), "last_at": _iso(rows[-1].at) if rows else None,
            "customers": sum(int(d.get("customers") or 0) for d in details),
            "values_removed": sum(sum(int(v) for v in (d.get("counts") or {}).values())
                                  for d in details),
            "finished": bool(details and details[-1].get("finished")),
            "purge_date": details[-1].get("purge_date") if details else None}


def _timeline() -> list[dict]:
    """The milestones, oldest first: imports, first and last link, waves, cards, subscriptions
    applied, drift fixes, the purge."""
    events: list[tuple[datetime, str]] = []
    for run in db.session.execute(select(ImportRun).where(ImportRun.status == "succeeded")
                                  .order_by(ImportRun.started_at)).scalars():
        events.append((run.finished_at or run.started_at,
                       f"{run.kind} file imported ({run.file_name})"))
    first_link, last_link = db.session.execute(
        select(func.min(Link.created_at), func.max(Link.created_at))).one()
    if first_link:
        events.append((first_link, "first link made"))
    for wave in db.session.execute(select(Wave).order_by(Wave.created_at)).scalars():
        events.append((wave.created_at, f"email wave {wave.id}: {wave.queued:,} queued"))
    first_card, last_card = db.session.execute(
        select(func.min(SavedPaymentMethod.created_at),
               func.max(SavedPaymentMethod.created_at))).one()
    if first_card:
        events.append((first_card, "first card saved through cardbridge"))
        events.append((last_card, "latest card saved through cardbridge"))
    for action, label in (("subscription.apply", "subscriptions applied on Stripe"),
                          ("drift.fixed", "drift fixed"), ("purge", "personal data purged")):
        for row in db.session.execute(select(AuditEvent).where(AuditEvent.action == action)
                                      .order_by(AuditEvent.at)).scalars():
            events.append((row.at, label))
    events.sort(key=lambda e: e[0])
    return [{"at": _iso(at), "what": what} for at, what in events]


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _cards_per_day(days_back: int = 180) -> list[tuple[date, int]]:
    since = (utcnow() - timedelta(days=days_back)).date()
    first = db.session.execute(select(func.min(SavedPaymentMethod.created_at))).scalar()
    if first is None:
        return []
    start = max(first.date(), since)
    counts = Counter(at.date() for at in db.session.execute(
        select(SavedPaymentMethod.created_at).where(
            SavedPaymentMethod.created_at >= datetime.combine(start, datetime.min.time(), UTC)))
        .scalars())
    today = utcnow().date()
    return [(start + timedelta(days=n), counts.get(start + timedelta(days=n), 0))
            for n in range((today - start).days + 1)]


def render_html(figures: dict) -> str:
    """The report page: figures, tables, and two charts drawn as inline SVG."""
    days = _cards_per_day()
    charts = {}
    if days:
        total = sum(n for _, n in days)
        charts["cards"] = bar_chart(days, title="Cards saved through cardbridge per day",
                                    description=f"{total:,} cards over {len(days)} days.",
                                    chart_id="cards-chart", width=960, height=260,
                                    css_class="chart")
    risk = revenue.at_risk_series(utcnow().date(), days=180)
    charts["risk"] = [(cur, bar_chart(
        [(d, round(revenue.major(n, cur))) for d, n in points],
        title=f"Monthly revenue at risk, {cur.upper()}",
        description=f"{revenue.money(points[-1][1], cur)} a month at risk at the end.",
        chart_id=f"risk-{cur}", width=960, height=260, unit=f" {cur.upper()}"))
        for cur, points in risk.items()]
    failed = db.session.execute(select(func.count(distinct(CustomerEvent.customer_id)))
                                 .where(CustomerEvent.kind == "setup_failed")).scalar_one()
    return render_template("report/final.html", r=figures, charts=charts, money=revenue.money,
                           setup_failed_customers=failed,
                           brand=current_app.config.get("BRAND_COLOR", "#3b4cca"))

