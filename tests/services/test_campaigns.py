"""cardbridge/campaigns/service.py, `flask campaign`, `flask bounce` and the bounce webhook."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from smtp_sink import SinkProcess, SmtpSink, drain, mail_config, queue_link_emails
from sqlalchemy import select, update

from cardbridge.campaigns import service as campaigns
from cardbridge.delivery import outbox
from cardbridge.email.emails import needs_human, queue_email
from cardbridge.extensions import db, huey
from cardbridge.links.service import issue_link, revoke_links
from cardbridge.models import Customer, CustomerEvent, Email, Link, SendBucket
from cardbridge.models.types import utcnow


@pytest.fixture
def sink():
    with SmtpSink() as running:
        yield running


@pytest.fixture
def mail_app(make_app, app, sink):
    # After `app` (which make_customer uses): the queue follows the app made last.
    return make_app(**mail_config(sink))


def cli(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    return result


def emails(app, **where) -> list[Email]:
    with app.app_context():
        query = select(Email).order_by(Email.id)
        for key, value in where.items():
            query = query.where(getattr(Email, key) == value)
        found = db.session.execute(query).scalars().all()
        db.session.expunge_all()
        return found


def status_of(app, customer) -> str:
    with app.app_context():
        return db.session.get(Customer, customer.id).status


# -- waves ---------------------------------------------------------------------------------------
def test_wave_emails_only_customers_in_the_status_and_makes_them_invited(mail_app, sink,
                                                                         make_customer):
    needing = [make_customer() for _ in range(3)]
    others = [make_customer(status="ready"), make_customer(status="updated")]
    result = cli(mail_app, "campaign", "send", "--status", "needs_update")
    assert result.exit_code == 0, result.output
    assert "wave 1: queued 3 link email(s)" in result.output
    drain(mail_app)
    assert sorted(sink.recipients()) == sorted(c.email for c in needing)
    assert {status_of(mail_app, c) for c in needing} == {"invited"}
    assert [status_of(mail_app, c) for c in others] == ["ready", "updated"]


def test_dry_run_says_who_and_changes_nothing(mail_app, make_customer):
    for _ in range(3):
        make_customer()
    result = cli(mail_app, "campaign", "send", "--dry-run", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "would queue 2 link email(s)" in result.output
    assert emails(mail_app) == []


def test_a_wave_takes_a_count_or_a_percentage(mail_app, make_customer):
    for _ in range(10):
        make_customer()
    assert "queued 3 " in cli(mail_app, "campaign", "send", "--percent", "30").output
    assert "queued 2 " in cli(mail_app, "campaign", "send", "--limit", "2").output
    assert len(emails(mail_app)) == 5


def test_a_new_wave_skips_customers_already_emailed_a_live_link(mail_app, sink, make_customer):
    first = [make_customer() for _ in range(2)]
    cli(mail_app, "campaign", "send", "--limit", "1")
    drain(mail_app)  # first[0] now has an emailed live link (status invited)
    later = make_customer(status="invited")  # invited with a generated link nobody emailed
    with mail_app.app_context():
        generated = issue_link(db.session.get(Customer, later.id), created_by="staff")
        db.session.commit()
    cli(mail_app, "campaign", "send", "--status", "needs_update")
    cli(mail_app, "campaign", "send", "--status", "invited")
    pending = cli(mail_app, "campaign", "send", "--status", "invited")  # still queued: skip
    assert "queued 0 " in pending.output
    drain(mail_app)
    assert sorted(sink.recipients()) == sorted([first[0].email, first[1].email, later.email])
    mail = [r for r in sink.received if r.rcpt == later.email][0]
    assert generated.url in mail.text()  # the live link they had, not a new one


def test_a_customer_whose_emailed_link_expired_is_in_the_next_wave(mail_app, sink,
                                                                   make_customer):
    customer = make_customer()
    cli(mail_app, "campaign", "send")
    drain(mail_app)
    with mail_app.app_context():
        db.session.execute(update(Link).values(expires_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    # A wave first moves customers whose every link expired back to needs_update.
    assert "queued 0 " in cli(mail_app, "campaign", "send", "--status", "invited").output
    assert status_of(mail_app, customer) == "needs_update"
    assert "queued 1 " in cli(mail_app, "campaign", "send").output


def test_a_wave_refuses_statuses_that_need_no_card(mail_app):
    assert cli(mail_app, "campaign", "send", "--status", "updated").exit_code != 0
    with mail_app.app_context(), pytest.raises(ValueError, match="need a card"):
        campaigns.plan_wave("ready")


def test_a_scheduled_wave_waits_for_its_time(mail_app, sink, make_customer):
    make_customer()
    at = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
    result = cli(mail_app, "campaign", "send", "--at", at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert result.exit_code == 0, result.output
    drain(mail_app)
    (row,) = emails(mail_app)
    assert (row.status, row.next_attempt_at) == ("queued", at)
    assert sink.received == []


def test_campaign_email_is_throttled_across_workers(make_app, make_customer):
    with SinkProcess() as sink:  # its own process: arrival times free of our threads' GIL
        app = make_app(**mail_config(port=sink.port, CAMPAIGN_RATE_PER_MINUTE=600,  # 100 ms
                                     MAIL_BATCH_SIZE=4, MAIL_THROTTLE_HORIZON_SECONDS=1))
        for _ in range(12):
            make_customer()
        cli(app, "campaign", "send")
        drain(app, workers=3)  # three threads, three connections, one budget in the database
        sink.wait_for(12)
    times = sorted(at for at, _ in sink.received)
    # Slots are exactly 100 ms apart; a send can still arrive late (a thread wakes late, a
    # busy machine), so allow two emails of jitter: no stretch of k slots holds more than
    # k + 2 emails. Unthrottled, all twelve would arrive within a few milliseconds.
    for i in range(len(times)):
        for j in range(i + 3, len(times)):
            assert times[j] - times[i] >= (j - i - 2) * 0.1, (i, j)
    assert times[-1] - times[0] >= 0.9


def test_throttled_mail_waits_its_turn_without_the_pump_queueing_it_again(make_app, sink,
                                                                          make_customer):
    app = make_app(**mail_config(sink, CAMPAIGN_RATE_PER_MINUTE=60,
                                 MAIL_THROTTLE_HORIZON_SECONDS=1))
    for _ in range(3):
        make_customer()
    cli(app, "campaign", "send")
    with app.app_context():  # other workers hold the next 30 seconds of the budget
        db.session.add(SendBucket(name="campaign", next_free_at=time.time() + 30))
        db.session.commit()
    drain(app)
    waiting = emails(app, status="queued")
    assert len(waiting) == 3 and sink.received == []
    assert min(e.next_attempt_at for e in waiting) > utcnow() + timedelta(seconds=25)
    with app.app_context():  # not overdue: the minute pump leaves them to their task
        assert outbox.overdue_ids(utcnow()) == []
        assert huey.scheduled_count() >= 1  # their task comes back when the budget frees


def test_funnel_per_wave_counts_each_stage_after_the_email(mail_app, make_customer):
    customers = [make_customer() for _ in range(3)]
    cli(mail_app, "campaign", "send")
    drain(mail_app)
    with mail_app.app_context():
        later = utcnow() + timedelta(seconds=1)
        for customer, kinds in zip(customers, (["page_opened"],
                                               ["page_opened", "setup_started", "updated"],
                                               []), strict=True):
            for kind in kinds:
                db.session.add(CustomerEvent(customer_id=customer.id, kind=kind, at=later))
        db.session.commit()
        (row,) = campaigns.wave_funnel()
    assert (row["queued"], row["sent"], row["opened"], row["started"], row["updated"]) == \
        (3, 3, 2, 1, 1)
    listing = cli(mail_app, "campaign", "list").output
    assert "needs_update" in listing and "3      3      2       1       1" in listing


# -- reminders -----------------------------------------------------------------------------------
def emailed(app, *customers, days_ago: float) -> int:
    """First link emails sent `days_ago` (as if the clock had moved on); the last one's id."""
    queue_link_emails(app, customers)
    drain(app)
    age_all_sent(app, days_ago)
    return emails(app, kind="link")[-1].id


def reminder_steps(app, anchor_id) -> list[str]:
    return [e.step for e in emails(app, series_id=anchor_id)]


def plan(app, now=None) -> int:
    with app.app_context():
        queued = campaigns.plan_reminders(now)
        db.session.commit()
        return queued


def age_all_sent(app, days: float) -> None:
    with app.app_context():
        for email in db.session.execute(select(Email).where(Email.sent_at.is_not(None))).scalars():
            email.sent_at -= timedelta(days=days)
        db.session.commit()


def test_reminders_follow_the_cadence_once_each(mail_app, sink, make_customer):
    customer = make_customer()
    anchor = emailed(mail_app, customer, days_ago=2.9)
    assert plan(mail_app) == 0
    age_all_sent(mail_app, 0.2)  # 3.1 days after the first email
    assert plan(mail_app) == 1 and plan(mail_app) == 0
    drain(mail_app)
    assert reminder_steps(mail_app, anchor) == ["day3"]
    age_all_sent(mail_app, 4)  # day 7.1
    assert plan(mail_app) == 1
    drain(mail_app)
    age_all_sent(mail_app, 7)  # day 14.1
    assert plan(mail_app) == 1
    drain(mail_app)
    age_all_sent(mail_app, 30)
    assert plan(mail_app) == 0
    assert reminder_steps(mail_app, anchor) == ["day3", "day7", "day14"]
    assert [e.status for e in emails(mail_app, kind="reminder")] == ["sent"] * 3
    assert sink.recipients() == [customer.email] * 4
    subject = sink.received[1].message["Subject"]
    assert subject == "Reminder: please update your card for Example Co"


def test_the_planner_does_not_look_at_series_with_nothing_due_yet(mail_app, make_customer):
    """Every ten minutes over every series: those younger than the first cadence day cost no
    query of their own (a wave of thousands was one query each)."""
    from sqlalchemy import event

    def statements(count: int) -> int:
        emailed(mail_app, *[make_customer() for _ in range(count)], days_ago=1)
        seen: list[str] = []
        with mail_app.app_context():
            listener = lambda *args: seen.append(args[2])  # noqa: E731
            event.listen(db.engine, "before_cursor_execute", listener)
            try:
                assert campaigns.plan_reminders() == 0
            finally:
                event.remove(db.engine, "before_cursor_execute", listener)
            db.session.rollback()
        return len(seen)

    assert statements(2) == statements(8)


def test_overdue_steps_send_only_the_latest(mail_app, make_customer):
    anchor = emailed(mail_app, make_customer(), days_ago=10)
    assert plan(mail_app) == 1
    assert reminder_steps(mail_app, anchor) == ["day7"]


def test_last_reminder_goes_two_days_before_cutover_and_nothing_after(make_app, sink,
                                                                      make_customer):
    today = utcnow().date()
    app = make_app(**mail_config(sink, CUTOVER_DATE=today + timedelta(days=3)))
    anchor = emailed(app, make_customer(), days_ago=1)
    with app.app_context():
        steps = campaigns.reminder_steps(utcnow() - timedelta(days=1))
    # day3 would fall inside the last two days: the cutover reminder replaces it.
    assert steps == [("cutover", datetime.combine(today + timedelta(days=1),
                                                  datetime.min.time(), UTC))]
    assert plan(app) == 0
    assert plan(app, steps[0][1] + timedelta(minutes=1)) == 1
    assert reminder_steps(app, anchor) == ["cutover"]
    cutover = datetime.combine(today + timedelta(days=3), datetime.min.time(), UTC)
    assert plan(app, cutover + timedelta(days=5)) == 0


def test_a_queued_reminder_is_cancelled_once_the_cutover_has_come(make_app, sink,
                                                                  make_customer):
    app = make_app(**mail_config(sink, CUTOVER_DATE=utcnow().date()))
    customer = make_customer()
    with app.app_context():
        queue_email(db.session.get(Customer, customer.id), "reminder", throttled=True)
        db.session.commit()
    drain(app)
    (row,) = emails(app)
    assert (row.status, row.last_error) == ("cancelled", "cutover date has passed")
    assert sink.received == []


def test_reminders_stop_once_updated_or_revoked(mail_app, sink, make_customer):
    updated, revoked, waiting = make_customer(), make_customer(), make_customer()
    emailed(mail_app, updated, revoked, waiting, days_ago=3.5)
    with mail_app.app_context():
        db.session.get(Customer, updated.id).status = "updated"
        revoke_links(db.session.get(Customer, revoked.id), by="staff")
        db.session.commit()
    assert plan(mail_app) == 1
    assert [e.customer_id for e in emails(mail_app, kind="reminder")] == [waiting.id]
    with mail_app.app_context():  # and the one queued stops too if they update meanwhile
        db.session.get(Customer, waiting.id).status = "updated"
        db.session.commit()
    drain(mail_app)
    assert emails(mail_app, kind="reminder")[0].status == "cancelled"


# -- bounces -------------------------------------------------------------------------------------
def test_bounce_mark_stops_email_and_lists_the_customer(mail_app, sink, make_customer):
    bounced, other = make_customer(), make_customer()
    cli(mail_app, "campaign", "send")
    result = cli(mail_app, "bounce", "mark", bounced.email.upper(), "--reason", "mailbox gone")
    assert result.exit_code == 0, result.output
    assert "1 queued email(s) cancelled" in result.output
    drain(mail_app)
    assert sink.recipients() == [other.email]
    assert "queued 0 " in cli(mail_app, "campaign", "send").output
    with mail_app.app_context():
        (row,) = needs_human()
    assert (row.legacy_id, row.reason) == (bounced.legacy_id, "address bounced (cli): mailbox gone")
    assert bounced.legacy_id in cli(mail_app, "bounce", "list").output


def test_bounce_mark_rejects_what_is_not_an_address(mail_app):
    result = cli(mail_app, "bounce", "mark", "nobody")
    assert result.exit_code != 0 and "not an email address" in result.output


def post_bounce(client, body, secret="s3cret"):
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return client.post("/webhooks/email/bounce", json=body, headers=headers)


def test_bounce_webhook_needs_its_secret(make_app):
    closed = make_app(**mail_config())
    assert post_bounce(closed.test_client(), {"email": "a@example.com"}).status_code == 503
    app = make_app(**mail_config(BOUNCE_WEBHOOK_SECRET="s3cret"))
    client = app.test_client()
    assert post_bounce(client, {"email": "a@example.com"}, secret="wrong").status_code == 401
    assert post_bounce(client, {"email": "a@example.com"}, secret=None).status_code == 401


def test_bounce_webhook_marks_hard_bounces_by_address_or_message(make_app, sink,
                                                                 make_customer):
    app = make_app(**mail_config(sink, BOUNCE_WEBHOOK_SECRET="s3cret"))
    by_address, by_message, soft = make_customer(), make_customer(), make_customer()
    queue_link_emails(app, [by_message])
    drain(app)
    provider_id = emails(app)[0].provider_message_id
    response = post_bounce(app.test_client(), {"bounces": [  # no CSRF token: exempt
        {"email": by_address.email, "type": "hard", "reason": "550 user unknown"},
        {"message_id": provider_id},
        {"recipient": soft.email, "type": "soft"},
    ]})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"marked": 2, "ignored": 1}
    with app.app_context():
        listed = {row.legacy_id for row in needs_human()}
    assert listed == {by_address.legacy_id, by_message.legacy_id}


def test_without_a_cutover_date_the_cadence_has_no_last_reminder(mail_app):
    with mail_app.app_context():
        assert campaigns.cutover_start() is None
        steps = campaigns.reminder_steps(datetime(2026, 1, 1, tzinfo=UTC))
    assert [name for name, _ in steps] == ["day3", "day7", "day14"]
