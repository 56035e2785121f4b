"""email/mailer.py and the outbox: SMTP to a real server, the .eml outbox, what emails say."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from smtp_sink import SmtpSink, drain, mail_config, queue_link_emails
from sqlalchemy import select

from cardbridge.email.emails import needs_human, queue_confirmation_email
from cardbridge.extensions import db
from cardbridge.links.service import load_link
from cardbridge.models import Bounce, Customer, Email, SavedPaymentMethod
from cardbridge.models.types import utcnow


@pytest.fixture
def sink():
    with SmtpSink() as running:
        yield running


def email_rows(app) -> list[Email]:
    with app.app_context():
        found = db.session.execute(select(Email).order_by(Email.id)).scalars().all()
        db.session.expunge_all()
        return found


def test_without_mail_server_each_email_is_one_eml_file_in_the_outbox(make_app, make_customer):
    app = make_app(**mail_config())
    customers = [make_customer(), make_customer()]
    queue_link_emails(app, customers)
    drain(app)
    files = sorted((Path(app.instance_path) / "outbox").glob("*.eml"))
    assert [f.name for f in files] == ["00000001-link.eml", "00000002-link.eml"]
    parsed = message_from_bytes(files[0].read_bytes(), policy=default_policy)
    assert parsed["To"] == customers[0].email
    assert [e.provider_message_id for e in email_rows(app)] == [str(f) for f in files]
    drain(app)
    assert len(list((Path(app.instance_path) / "outbox").glob("*"))) == 2  # nothing twice


def test_a_batch_goes_over_one_smtp_connection(make_app, make_customer, sink):
    app = make_app(**mail_config(sink))
    queue_link_emails(app, [make_customer() for _ in range(5)])
    drain(app)
    assert len(sink.received) == 5
    assert len({r.peer for r in sink.received}) == 1


def test_sent_email_records_the_servers_id_and_our_message_id(make_app, make_customer, sink):
    app = make_app(**mail_config(sink))
    queue_link_emails(app, [make_customer()])
    drain(app)
    (row,) = email_rows(app)
    assert (row.status, row.attempts, row.provider_message_id) == ("sent", 1, "CB000001")
    assert row.message_id == sink.received[0].message["Message-ID"]
    assert row.sent_at is not None and row.claim_token is None


def test_sending_the_link_email_makes_the_customer_invited(make_app, make_customer, sink):
    app = make_app(**mail_config(sink))
    customer = make_customer()
    queue_link_emails(app, [customer])
    with app.app_context():
        db.session.get(Customer, customer.id).status = "needs_update"  # as if never linked
        db.session.commit()
    drain(app)
    with app.app_context():
        assert db.session.get(Customer, customer.id).status == "invited"


def test_html_part_has_its_css_inlined(make_app, make_customer, sink):
    app = make_app(**mail_config(sink, BRAND_COLOR="#aa3300"))
    queue_link_emails(app, [make_customer()])
    drain(app)
    html = sink.received[0].html()
    assert "<style" not in html
    button = re.search(r'<a [^>]*class="button"[^>]*>', html).group(0)
    assert "background: #aa3300" in button and "style=" in button


def test_link_email_is_written_against_phishing(make_app, make_customer, sink):
    app = make_app(**mail_config(sink, SUPPORT_EMAIL="help@example.com"))
    customer = make_customer(name="Ada Lovelace", legacy_id="ACME-1001", card_brand="visa",
                             card_last4="4242", card_exp_month=1, card_exp_year=2031)
    queue_link_emails(app, [customer])
    drain(app)
    received = sink.received[0]
    for part in (received.text(), received.html()):
        assert "Stripe" in part  # explains the move
        assert "Ada Lovelace" in part and "ACME-1001" in part  # names the customer
        assert "Visa ending 4242" in part  # the card on file, last 4 only
        assert "never ask for your card number" in part
        assert "help@example.com" in part  # how to check with support
        assert "https://cards.example.test/u/" in part
    assert "<form" not in received.html() and "<input" not in received.html()
    url = re.search(r"https://cards\.example\.test/u/\S+", received.text()).group(0)
    with app.app_context():  # the emailed URL opens the link we made
        assert load_link(url.rsplit("/", 1)[1]).customer_id == customer.id


def test_confirmation_names_the_card_that_will_be_charged_and_is_queued_once(make_app,
                                                                          make_customer, sink):
    app = make_app(**mail_config(sink))
    customer = make_customer(status="updated", name="Grace")
    with app.app_context():
        pm = SavedPaymentMethod(customer_id=customer.id, stripe_payment_method_id="pm_1",
                                setup_intent_id="seti_1", brand="visa", last4="4242",
                                recorded_via="browser", created_at=utcnow())
        db.session.add(pm)
        db.session.flush()
        first = queue_confirmation_email(customer.id, pm.id)
        again = queue_confirmation_email(customer.id, pm.id)
        db.session.commit()
    assert first is not None and again is None
    drain(app)
    (received,) = sink.received
    assert received.message["Subject"] == "Your card for Example Co is updated"
    assert "Your Visa ending 4242 will be charged from now on" in received.text()


def test_a_refused_mailbox_fails_the_email_and_lists_the_customer(make_app, make_customer,
                                                                  sink):
    app = make_app(**mail_config(sink))
    gone, fine = make_customer(email="gone@example.com"), make_customer()
    sink.refuse.add("gone@example.com")
    queue_link_emails(app, [gone, fine])
    drain(app)
    assert [e.status for e in email_rows(app)] == ["failed", "sent"]
    assert "550" in email_rows(app)[0].last_error
    with app.app_context():
        assert db.session.execute(select(Bounce.source)).scalars().all() == ["smtp"]
        assert [row.legacy_id for row in needs_human()] == [gone.legacy_id]


def test_a_temporary_refusal_is_retried_later_and_shows_as_queued(make_app, make_customer,
                                                                   sink):
    app = make_app(**mail_config(sink, MAIL_RETRY_BASE_SECONDS=600))
    customer = make_customer(email="busy@example.com")
    sink.tempfail["busy@example.com"] = 1
    queue_link_emails(app, [customer])
    drain(app)
    (row,) = email_rows(app)
    assert (row.status, row.attempts, row.sent_at) == ("queued", 1, None)
    assert "451" in row.last_error
    assert (row.next_attempt_at - row.updated_at).total_seconds() >= 600
    assert sink.received == []


def test_a_connection_dropped_after_the_body_is_not_resent(make_app, make_customer, sink):
    app = make_app(**mail_config(sink))
    customer = make_customer(email="flaky@example.com")
    sink.drop_after_data.add("flaky@example.com")
    queue_link_emails(app, [customer])
    drain(app)
    drain(app)
    (row,) = email_rows(app)
    assert row.status == "failed" and "may have been delivered" in row.last_error
    assert sink.recipients() == ["flaky@example.com"]  # once: at most once, as promised


def test_building_a_message_never_resolves_this_hosts_name(make_app, monkeypatch):
    """Flask-Mail's Message asks for the host's FQDN per message; ours names its row."""
    import socket

    from cardbridge.email import mailer

    app = make_app(**mail_config(MAIL_DEFAULT_SENDER="Example Co <billing@example.com>"))

    def no_lookup(*args, **kwargs):
        raise AssertionError("a message looked up the host name")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    with app.app_context():
        msg = mailer.build("ada@example.com", "Hello", "text", "<p>html</p>",
                           message_id=mailer.message_id_for(7), headers={"X-Cardbridge-Email": "7"})
        parsed = message_from_bytes(msg.as_bytes(), policy=default_policy)
    assert parsed["Message-ID"] == msg["Message-ID"] and "cb7" in msg["Message-ID"]
    assert msg["Message-ID"].endswith("@example.com>")
    assert parsed["To"] == "ada@example.com" and parsed["X-Cardbridge-Email"] == "7"


def test_a_line_break_in_a_header_is_refused(make_app):
    from cardbridge.email import mailer

    app = make_app(**mail_config())
    with app.app_context():
        for to, subject in (("ada@example.com\r\nBcc: x@example.com", "Hi"),
                            ("ada@example.com", "Hi\nBcc: x@example.com")):
            with pytest.raises(ValueError, match="line break"):
                mailer.build(to, subject, "t", "h", message_id="<1@example.com>")


def test_rendered_emails_carry_no_runs_of_blank_lines(make_app):
    from cardbridge.email import mailer

    app = make_app(**mail_config())
    with app.app_context():
        text, html = mailer.render("link", "en", name="Ada", reference="B-1", card="Visa",
                                   url="https://cards.example.test/u/t", expires="May 1, 2031",
                                   title="Action needed", site_host="cards.example.test")
    assert "\n\n\n" not in text and "Hi Ada,\n\n" in text  # paragraphs stay apart
    assert not re.search(r"\n[ \t]*\n", html)


def test_utf8_names_arrive_intact_and_a_server_without_8bitmime_gets_7bit_bytes(
        make_app, make_customer, sink):
    app = make_app(**mail_config(sink))
    queue_link_emails(app, [make_customer(locale="fr", name="Émilie du Châtelet")])
    drain(app)
    (first,) = sink.received
    assert "Émilie du Châtelet" in first.text() and "Émilie du Châtelet" in first.html()

    sink.offer_8bitmime = False
    queue_link_emails(app, [make_customer(locale="fr", name="Gabrielle Émilie")])
    drain(app)
    second = sink.received[1]
    assert second.mail_options == [] and second.raw.isascii()
    assert "Gabrielle Émilie" in second.text() and "Gabrielle Émilie" in second.html()
