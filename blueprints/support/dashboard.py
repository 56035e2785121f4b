"""The console's home: counts per status, the funnel, each wave's funnel, cards saved per day,
and, once legacy subscriptions are imported, the revenue at risk and its burn-down."""

from __future__ import annotations

from flask import current_app, render_template

from blueprints.support import bp
from cardbridge.campaigns import service as campaigns
from cardbridge.customers import dashboard as progress
from cardbridge.customers.charts import bar_chart
from cardbridge.models.types import utcnow
from cardbridge.payments import drift
from cardbridge.subscriptions import revenue


@bp.get("/")
def dashboard():
    counts = progress.status_counts()
    days = progress.updates_per_day(30)
    total_days = sum(n for _, n in days)
    chart = bar_chart(
        days, title="Cards saved per day, last 30 days",
        description=f"{total_days} cards saved in the last 30 days; "
                    f"the busiest day had {max((n for _, n in days), default=0)}.",
        chart_id="updates-chart",
    )
    return render_template(
        "support/dashboard.html", counts=counts, total=sum(counts.values()),
        funnel=progress.funnel(counts), failures=progress.setup_failures(), days=days,
        total_days=total_days, chart=chart, waves=campaigns.wave_funnel(limit=5),
        risk=_revenue_at_risk(), drift_open=drift.open_count(),
    )


def _revenue_at_risk() -> dict | None:
    """MRR per group, and per currency a burn-down of what is at risk to the cutover."""
    groups = revenue.risk_groups()
    if not any(g["count"] for g in groups):
        return None
    today = utcnow().date()
    cutover = current_app.config.get("CUTOVER_DATE")
    burn = []
    for cur, points in revenue.at_risk_series(today).items():
        whole = [(day, round(revenue.major(n, cur))) for day, n in points]
        now = revenue.money(points[-1][1], cur)
        burn.append({"currency": cur, "points": points, "now": now, "chart": bar_chart(
            whole, title=f"Monthly revenue at risk, {cur.upper()}",
            description=f"{now} a month is waiting for a card or in review today"
                        + (f"; the cutover is {cutover:%-d %B %Y}." if cutover else "."),
            chart_id=f"risk-chart-{cur}", width=960, height=260,
            css_class="chart chart-wide",
            until=cutover if cutover and cutover > today else None,
            marker="Cutover", unit=f" {cur.upper()}")})
    return {"groups": groups, "burn": burn, "cutover": cutover,
            "days_left": (cutover - today).days if cutover else None}
