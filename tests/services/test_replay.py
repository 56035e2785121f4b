"""payments/replay.py and `flask stripe replay` around the edges: where a run starts, Stripe
down while reading or while applying, a bad --since, the order events are applied in."""

from __future__ import annotations

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import AuditEvent, StripeEvent
from cardbridge.payments import replay as replaying
from cardbridge.stripe_gateway import StripeUnavailable


def event(n: int, type_: str = "setup_intent.succeeded", created: int = 1_800_000_000) -> dict:
    return {"id": f"evt_{n}", "object": "event", "type": type_, "created": created + n,
            "data": {"object": {"id": f"seti_{n}", "object": "setup_intent"}}}


class Stripe:
    """A gateway that lists these events newest first, two a page; SetupIntents not ours."""

    def __init__(self, events: list[dict], *, down: bool = False):
        self.events = sorted(events, key=lambda e: e["created"], reverse=True)
        self.down, self.asked = down, []

    def list_events(self, *, created_gte=None, starting_after=None, limit=100):
        self.asked.append(created_gte)
        found = [e for e in self.events if created_gte is None or e["created"] >= created_gte]
        if starting_after:
            found = found[[e["id"] for e in found].index(starting_after) + 1:]
        return {"data": found[:2], "has_more": len(found) > 2}

    def retrieve_setup_intent(self, seti_id):
        if self.down:
            raise StripeUnavailable("down")
        return {"id": seti_id, "metadata": {}, "status": "succeeded"}


def test_events_are_applied_oldest_first_across_pages_and_the_next_run_starts_there(ctx):
    stripe = Stripe([event(n) for n in range(5)] + [event(9, "plan.created")])
    report = replaying.replay(stripe)
    assert (report.seen, report.applied, report.ignored) == (6, 5, 1)
    rows = db.session.execute(select(StripeEvent.event_id).order_by(StripeEvent.id)).scalars()
    assert list(rows) == ["evt_0", "evt_1", "evt_2", "evt_3", "evt_4", "evt_9"]
    assert report.outcomes == {"setup_intent.succeeded: not_ours": 5}
    again = replaying.replay(stripe)
    assert stripe.asked[0] is None  # never replayed: everything Stripe keeps
    assert stripe.asked[-1] == 1_800_000_009 - replaying.OVERLAP_SECONDS
    assert (again.seen, again.applied, again.already_processed) == (6, 0, 6)


def test_stripe_down_while_applying_leaves_the_event_for_the_worker(ctx):
    report = replaying.replay(Stripe([event(1)], down=True))
    assert report.deferred == 1
    row = db.session.execute(select(StripeEvent)).scalar_one()
    assert row.processed_at is None and row.outcome == "queued"  # the pump queues it again


def test_cli_counts_and_refuses_a_bad_since(app, runner, monkeypatch):
    stripe = Stripe([event(1), event(2, "customer.updated")])
    monkeypatch.setitem(app.extensions, "stripe_gateway", stripe)
    result = runner.invoke(args=["stripe", "replay", "--since", "2027-01-15T10:00:00+02:00"])
    assert result.exit_code == 0, result.output
    assert "events seen 2: applied 1, already processed 0, ignored types 1" in result.output
    assert stripe.asked == [1_800_000_000]  # 08:00 UTC
    bad = runner.invoke(args=["stripe", "replay", "--since", "last tuesday"])
    assert bad.exit_code != 0 and "is not an ISO date" in bad.output


def test_stripe_down_while_reading_fails_and_keeps_the_start(app, runner, monkeypatch):
    class Down(Stripe):
        def list_events(self, **kwargs):
            raise StripeUnavailable("Stripe could not be reached")

    monkeypatch.setitem(app.extensions, "stripe_gateway", Down([]))
    result = runner.invoke(args=["stripe", "replay"])
    assert result.exit_code == 1 and "run it again" in result.output
    with app.app_context():
        assert db.session.execute(select(AuditEvent).where(
            AuditEvent.action == replaying.ACTION)).first() is None
