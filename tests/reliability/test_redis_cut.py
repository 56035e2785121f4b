"""Redis cut (issue 16, point 3), through a proxy the test owns: /readyz says so; pages still
answer; rate limits go on being enforced in each process's memory (fail-closed: a sign-in
flood is still refused); an email queued while the queue is unreachable stays in the outbox
and is sent, once, when Redis is back (docs/deployment.md, "Redis cut")."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, Email
from tests.conftest import TEST_REDIS_URL
from tests.reliability.proxy import Proxy
from tests.smtp_sink import SmtpSink, drain, mail_config
from tests.support.staff_helpers import FAST_HASH, create_staff, post, sign_in, token_of

pytestmark = pytest.mark.redis


@pytest.fixture
def proxied_redis():
    parts = urlsplit(TEST_REDIS_URL or "redis://127.0.0.1:6379/15")
    proxy = Proxy(parts.hostname, parts.port or 6379)
    yield proxy, urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))
    proxy.close()


def test_with_redis_cut_pages_answer_limits_hold_and_mail_waits_to_go_once(
        make_app, make_customer, proxied_redis):
    proxy, url = proxied_redis
    with SmtpSink() as sink:
        app = make_app(**mail_config(sink), REDIS_URL=url, RATELIMIT_STORAGE_URI=url,
                       STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                       STAFF_LOGIN_LIMIT_PER_IP="3 per minute")
        customer = make_customer(legacy_id="R-1", status="needs_update")
        with app.app_context():
            token = issue_link(db.session.get(Customer, customer.id), created_by="test").token
            db.session.commit()
        staff = app.test_client()
        assert sign_in(staff, create_staff(app, "ops@example.com", "admin")).status_code == 303

        proxy.cut()
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503 and "redis" in ready.get_data(as_text=True)
        assert app.test_client().get(f"/u/{token}").status_code == 200

        intruder = app.test_client()
        csrf = token_of(intruder)
        answers = [intruder.post("/support/login", data={
            "email": "ops@example.com", "password": f"wrong-guess-{n}", "csrf_token": csrf}
        ).status_code for n in range(5)]
        assert answers[:3] == [200, 200, 200] and answers[3:] == [429, 429]

        sent = post(staff, f"/support/customers/{customer.id}/send",
                    {"reason": "customer asked again"})
        assert sent.status_code == 303  # the queue's outage fails no request
        with app.app_context():
            [email] = db.session.execute(select(Email)).scalars().all()
            assert email.status == "queued"

        proxy.restore()
        drain(app)  # the worker, Redis back: the outbox row nobody was told about goes out
        drain(app)  # and only once
        assert Counter(sink.recipients()) == Counter({customer.email: 1})
        with app.app_context():
            assert db.session.execute(select(Email.status)).scalar_one() == "sent"
        assert app.test_client().get("/readyz").status_code == 200
