"""The console's home: counts per status, the funnel, each wave's funnel, cards saved per day."""

from __future__ import annotations

from flask import render_template

from blueprints.support import bp
from cardbridge.campaigns import service as campaigns
from cardbridge.customers import dashboard as progress
from cardbridge.customers.charts import bar_chart


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
    )
