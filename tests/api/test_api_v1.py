"""/api/v1: bearer tokens, the SPEC shapes, stable JSON error codes, rate limits, no CSRF."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link, load_link
from cardbridge.models import ApiToken, AuditEvent, Customer, Email, Link


def create(client, auth, body, **kwargs):
    return client.post("/api/v1/links", json=body, headers=auth, **kwargs)


def test_post_links_returns_201_with_url_link_id_and_expiry(app, client, auth, make_customer):
    c = make_customer(legacy_id="L-1")
    response = create(client, auth, {"customer": "L-1", "send": False})
    assert response.status_code == 201
    body = response.json
    assert set(body) >= {"url", "link_id", "expires_at"}
    assert body["url"].startswith("https://cards.example.test/u/")
    assert datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).tzinfo is not None
    with app.app_context():
        link = load_link(body["url"].rsplit("/", 1)[1])
        assert link.public_id == body["link_id"] and link.customer_id == c.id
        assert link.created_by == "api:helpdesk" and link.channel == "generated"
        assert db.session.execute(select(Email)).first() is None
        row = db.session.execute(select(AuditEvent)).scalar_one()
        assert (row.actor, row.action, row.target, row.ip) == (
            "api:helpdesk", "link.generated", "L-1", "127.0.0.1")


def test_post_links_by_cus_id_and_send_queues_the_email(app, client, auth, make_customer):
    c = make_customer(stripe_customer_id="cus_ApiSend")
    response = create(client, auth, {"customer": "cus_ApiSend", "send": True,
                                     "reason": "ticket 7"})
    assert response.status_code == 201 and response.json["sent"] is True
    with app.app_context():
        email = db.session.execute(select(Email)).scalar_one()
        assert email.customer_id == c.id and email.kind == "link"
        actions = db.session.execute(select(AuditEvent.action, AuditEvent.reason)).all()
        assert sorted(actions) == [("link.generated", "ticket 7"), ("link.sent", "ticket 7")]


def test_get_customer_shows_status_stripe_ids_and_link_history(app, client, auth, make_customer):
    c = make_customer(legacy_id="L-9", stripe_customer_id="cus_Nine")
    with app.app_context():
        issued = issue_link(db.session.get(Customer, c.id), created_by="cli")
        db.session.commit()
        link_id = issued.link.public_id
    response = client.get("/api/v1/customers/L-9", headers=auth)
    assert response.status_code == 200
    body = response.json
    assert (body["legacy_id"], body["status"], body["stripe_customer_id"]) == (
        "L-9", "invited", "cus_Nine")
    assert body["payment_method_id"] is None
    [link] = body["links"]
    assert link["link_id"] == link_id and link["state"] == "live"
    assert "url" not in link  # a link's URL is shown only when it is made


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_token"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_token"),
    ({"Authorization": "Bearer "}, "missing_token"),
    ({"Authorization": "Bearer cbk_not-a-real-token"}, "invalid_token"),
    ({"Authorization": "Bearer " + "x" * 5000}, "invalid_token"),
])
def test_requests_without_a_valid_token_get_401_json(client, make_customer, headers, code):
    make_customer(legacy_id="L-1")
    response = client.get("/api/v1/customers/L-1", headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == code and response.json["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_is_refused(app, client, auth, token):
    with app.app_context():
        db.session.execute(select(ApiToken)).scalar_one().revoked_at = datetime.now().astimezone()
        db.session.commit()
    response = client.get("/api/v1/customers/x", headers=auth)
    assert response.status_code == 401 and response.json["error"] == "token_revoked"


def test_token_is_stored_as_a_sha256_hash_only(app, token):
    import hashlib

    with app.app_context():
        row = db.session.execute(select(ApiToken)).scalar_one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.token_hash, row.prefix)


def test_a_session_cookie_is_not_a_credential(app, client, make_customer):
    """Signed in to the console or not, the API only looks at the bearer token."""
    from tests.support.staff_helpers import FAST_HASH, create_staff, sign_in

    app.config["STAFF_PASSWORD_METHOD"] = FAST_HASH
    sign_in(client, create_staff(app, "staff@example.com"))
    make_customer(legacy_id="L-1")
    assert client.get("/api/v1/customers/L-1").status_code == 401


@pytest.mark.parametrize("body, status, code, field", [
    ({"customer": "nobody"}, 404, "customer_not_found", None),
    ({}, 400, "invalid_request", "customer"),
    ({"customer": 42}, 400, "invalid_request", "customer"),
    ({"customer": ""}, 400, "invalid_request", "customer"),
    ({"customer": "L-1", "send": "yes"}, 400, "invalid_request", "send"),
    ({"customer": "L-1", "days": 0}, 400, "invalid_request", "days"),
    ({"customer": "L-1", "days": True}, 400, "invalid_request", "days"),
    ({"customer": "L-1", "extra": 1}, 400, "invalid_request", "extra"),
    (["L-1"], 400, "invalid_json", None),
    ({"customer": "a\x00b"}, 404, "customer_not_found", None),
])
def test_bad_bodies_get_stable_error_codes(client, auth, make_customer, body, status, code,
                                           field):
    make_customer(legacy_id="L-1")
    response = create(client, auth, body)
    assert response.status_code == status
    assert response.json["error"] == code
    assert response.json.get("field") == field


def test_non_json_body_is_refused(client, auth):
    response = client.post("/api/v1/links", data="customer=L-1", headers=auth)
    assert response.status_code == 400 and response.json["error"] == "invalid_json"


def test_unknown_api_paths_and_methods_answer_json(client, auth):
    assert client.get("/api/v1/nope", headers=auth).json["error"] == "not_found"
    response = client.delete("/api/v1/links", headers=auth)
    assert response.status_code == 405 and response.json["error"] == "method_not_allowed"


def test_api_needs_no_csrf_token(client, auth, make_customer):
    make_customer(legacy_id="L-1")
    assert create(client, auth, {"customer": "L-1"}).status_code == 201  # CSRF is on globally


def test_api_is_rate_limited_per_token(make_app, make_customer):
    app = make_app(API_RATE_LIMIT="3 per minute")
    from cardbridge.staff import api_tokens

    with app.app_context():
        first = api_tokens.create_token("one", created_by="t").secret
        second = api_tokens.create_token("two", created_by="t").secret
        db.session.commit()
    client = app.test_client()
    for _ in range(3):
        client.get("/api/v1/customers/x", headers={"Authorization": f"Bearer {first}"})
    limited = client.get("/api/v1/customers/x", headers={"Authorization": f"Bearer {first}"})
    assert limited.status_code == 429
    assert limited.json["error"] == "rate_limited" and int(limited.headers["Retry-After"]) > 0
    other = client.get("/api/v1/customers/x", headers={"Authorization": f"Bearer {second}"})
    assert other.status_code == 404


def test_token_last_use_is_recorded(app, client, auth):
    client.get("/api/v1/customers/x", headers=auth)
    with app.app_context():
        assert db.session.execute(select(ApiToken)).scalar_one().last_used_at is not None


def test_openapi_document_is_public_and_names_both_operations(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/v1/links", "/api/v1/customers/{legacy_id}"}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_a_new_link_replaces_the_old_one(app, client, auth, make_customer):
    make_customer(legacy_id="L-1")
    first = create(client, auth, {"customer": "L-1"}).json
    second = create(client, auth, {"customer": "L-1"}).json
    with app.app_context():
        states = {link.public_id: link.revoked_at is not None
                  for link in db.session.execute(select(Link)).scalars()}
    assert states == {first["link_id"]: True, second["link_id"]: False}


def test_made_up_tokens_are_limited_by_address(app, client):
    statuses = [client.get("/api/v1/customers/L-1",
                           headers={"Authorization": f"Bearer cbk_guess{n:04d}"}).status_code
                for n in range(250)]
    assert statuses[0] == 401
    assert 429 in statuses
    assert statuses.count(401) <= 20


def test_made_up_tokens_share_one_budget_across_routes(app, client):
    statuses = []
    for n in range(30):
        headers = {"Authorization": f"Bearer cbk_guess{n:04d}"}
        statuses.append(client.get("/api/v1/customers/L-1", headers=headers).status_code)
        statuses.append(client.post("/api/v1/links", json={"customer": "L-1"},
                                    headers=headers).status_code)
    assert statuses.count(401) <= 20 and 429 in statuses


def test_a_valid_token_is_not_held_back_by_someone_elses_guessing(app, client, auth,
                                                                   make_customer):
    make_customer(legacy_id="L-9")
    for n in range(30):
        client.get("/api/v1/customers/L-9", headers={"Authorization": f"Bearer cbk_x{n}"},
                   environ_overrides={"REMOTE_ADDR": "10.9.9.9"})
    assert client.get("/api/v1/customers/L-9", headers=auth).status_code == 200


def test_api_link_sends_share_the_per_customer_limit_with_the_console(make_app, make_customer):
    from tests.support.staff_helpers import FAST_HASH, create_staff, post, sign_in

    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_CUSTOMER_LINK_LIMIT="2 per hour")
    with app.app_context():
        from cardbridge.staff import api_tokens

        secret = api_tokens.create_token("bot", created_by="test").secret
        db.session.commit()
    customer = make_customer(legacy_id="L-shared")
    staff = app.test_client()
    assert sign_in(staff, create_staff(app, "agent@example.com", "agent")).status_code == 303
    sent = post(staff, f"/support/customers/{customer.id}/send", {"reason": "customer asked"})
    assert sent.status_code == 303
    api = app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    assert create(api, auth, {"customer": "L-shared", "send": True}).status_code == 201
    third = create(api, auth, {"customer": "L-shared", "send": True})
    assert third.status_code == 429
    assert third.get_json()["error"] == "rate_limited"
