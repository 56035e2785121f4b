"""The dashboard: counts per status, the funnel from the page's own events, the SVG chart."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from cardbridge.customers import dashboard
from cardbridge.customers.charts import bar_chart
from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, CustomerEvent, SavedPaymentMethod
from cardbridge.models.types import utcnow


def seed(app, make_customer):
    """2 needs_update (1 invited by link), 1 updated, 1 ready; one opened, one started, one
    failed setup, and a scanner-like GET that must not count."""
    a = make_customer(status="needs_update")
    b = make_customer(status="needs_update")
    u = make_customer(status="updated")
    make_customer(status="ready")
    with app.app_context():
        link = issue_link(db.session.get(Customer, a.id), created_by="test").link
        issue_link(db.session.get(Customer, u.id), created_by="test")
        for kind in ("page_opened", "setup_started", "setup_failed", "setup_failed"):
            db.session.add(CustomerEvent(customer_id=a.id, link_id=link.id, kind=kind))
        db.session.add(CustomerEvent(customer_id=u.id, kind="page_opened"))
        now = utcnow()
        for n, days_ago in enumerate((0, 0, 3)):
            db.session.add(SavedPaymentMethod(
                customer_id=u.id, stripe_payment_method_id=f"pm_{n}", setup_intent_id=f"seti_{n}",
                recorded_via="browser", created_at=now - timedelta(days=days_ago)))
        db.session.commit()
    return a, b, u


def test_counts_and_funnel(app, make_customer):
    seed(app, make_customer)
    with app.app_context():
        counts = dashboard.status_counts()
        assert counts == {"ready": 1, "needs_update": 1, "invited": 1, "updated": 1}
        stages = {s.key: s.count for s in dashboard.funnel(counts)}
        assert stages == {"needs_card": 3, "invited": 2, "opened": 2, "started": 1,
                          "updated": 1}
        assert dashboard.setup_failures() == {"events": 2, "customers": 1}


def test_updates_per_day_buckets_by_utc_day(app, make_customer):
    seed(app, make_customer)
    with app.app_context():
        days = dashboard.updates_per_day(7)
    assert len(days) == 7 and days[-1][0] == utcnow().date()
    assert days[-1][1] == 2 and days[-4][1] == 1 and sum(n for _, n in days) == 3


def test_a_bare_get_of_the_link_page_does_not_count_as_opened(app, client, make_customer):
    c = make_customer()
    with app.app_context():
        url = issue_link(db.session.get(Customer, c.id), created_by="test").url
        db.session.commit()
    client.head(url)
    client.get(url)  # what a mail scanner does: no script runs, so no page_opened event
    with app.app_context():
        assert {s.key: s.count for s in dashboard.funnel()}["opened"] == 0


def test_dashboard_page_shows_counts_funnel_and_an_inline_svg_chart(app, agent_client,
                                                                    make_customer):
    seed(app, make_customer)
    response = agent_client.get("/support/")
    page = response.get_data(as_text=True)
    assert re.search(r'data-status="updated">\s*1<', page)
    assert re.search(r'data-stage="opened">2', page)
    assert re.search(r'data-stage="setup_failed">2<', page)
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart"' in page
    assert 'role="img"' in page and "<title id=\"updates-chart-title\">" in page
    assert page.count('class="chart-bar"') == 30
    # No script from anywhere but us, and none inline.
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and all('src="/static/' in s for s in scripts)
    assert " style=" not in page
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp and "stripe" not in csp


def test_chart_scales_to_round_numbers_and_escapes_text():
    points = [(date(2026, 1, 1) + timedelta(days=i), n) for i, n in enumerate([0, 3, 7])]
    svg = str(bar_chart(points, title="<b>", description="a & b", chart_id="c"))
    assert "<title id=\"c-title\">&lt;b&gt;</title>" in svg and "a &amp; b" in svg
    assert ">8</text>" in svg and ">10</text>" not in svg  # 7: gridlines 0, 2, 4, 6, 8
    assert svg.count("<rect") == 3


def test_empty_database_dashboard_renders(agent_client):
    page = agent_client.get("/support/").get_data(as_text=True)
    assert "Migration progress" in page and "0 in the last 30 days" in page


def test_day_bucket_edges(app, make_customer):
    c = make_customer(status="updated")
    today = utcnow().date()
    midnight = datetime.combine(today, datetime.min.time(), tzinfo=utcnow().tzinfo)
    with app.app_context():
        for n, at in enumerate((midnight, midnight - timedelta(microseconds=1))):
            db.session.add(SavedPaymentMethod(
                customer_id=c.id, stripe_payment_method_id=f"pm_e{n}",
                setup_intent_id=f"seti_e{n}", recorded_via="webhook", created_at=at))
        db.session.commit()
        days = dict(dashboard.updates_per_day(2))
    assert days == {today: 1, today - timedelta(days=1): 1}


def test_dashboard_shows_each_waves_funnel(app, agent_client, make_customer):
    """Issue 5: sent → opened → started → updated per wave, on the dashboard itself."""
    from cardbridge.models import Email, Wave

    people = [make_customer() for _ in range(4)]
    with app.app_context():
        wave = Wave(created_by="admin@example.com", status_filter="needs_update", queued=4)
        db.session.add(wave)
        db.session.flush()
        sent_at = utcnow() - timedelta(hours=2)
        for n, person in enumerate(people):
            db.session.add(Email(customer_id=person.id, wave_id=wave.id, kind="link",
                                 to_address=person.email,
                                 status="sent" if n < 3 else "queued",
                                 sent_at=sent_at if n < 3 else None))
        later = utcnow() - timedelta(hours=1)
        for person, kinds in zip(people, (["page_opened", "setup_started", "updated"],
                                          ["page_opened"], []), strict=False):
            for kind in kinds:
                db.session.add(CustomerEvent(customer_id=person.id, kind=kind, at=later))
        # Opened before the wave's email went: not this wave's doing.
        db.session.add(CustomerEvent(customer_id=people[2].id, kind="page_opened",
                                     at=sent_at - timedelta(days=1)))
        db.session.commit()
        wave_id = wave.id
    page = agent_client.get("/support/").get_data(as_text=True)
    row = page[page.index(f'data-wave="{wave_id}"'):]
    row = row[:row.index("</tr>")]
    cells = dict(re.findall(r'data-funnel="(\w+)">(\d+)', row))
    assert cells == {"sent": "3", "opened": "2", "started": "1", "updated": "1"}
    assert "(67%)" in row  # opened: 2 of the 3 sent


def test_dashboard_says_when_there_are_no_waves(agent_client):
    assert "No email waves yet." in agent_client.get("/support/").get_data(as_text=True)
