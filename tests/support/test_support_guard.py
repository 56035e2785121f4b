"""The support blueprint's one guard: walks app.url_map so every support.* route is covered."""

from __future__ import annotations

import pytest

from tests.support.staff_helpers import token_of

PUBLIC = {"support.login", "support.login_code", "support.login_enrol"}
SAMPLE_ARGS = {"customer_id": 1, "user_id": 1, "token_id": 1, "job_id": "20260101000000-abcd",
               "what": "apply", "kind": "ledger"}


def support_routes(app):
    """(endpoint, method, url) for every support.* rule, with sample values for its arguments."""
    routes = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("support."):
                continue
            args = {name: SAMPLE_ARGS[name] for name in rule.arguments}
            url = rule.build(args)[1]
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                routes.append((rule.endpoint, method, url))
    assert len(routes) > 20  # the walk found the console
    return routes


def is_admin_only(app, endpoint: str) -> bool:
    return getattr(app.view_functions[endpoint], "support_role", None) == "admin"


def call(client, method: str, url: str, token: str | None = None):
    data = {"csrf_token": token} if token else {}
    return client.open(url, method=method, data=data if method != "GET" else None)


def test_every_support_route_needs_a_signed_in_staff_member(app, client, csrf):
    token = csrf("/support/login")  # a valid CSRF token, so only the guard can refuse
    for endpoint, method, url in support_routes(app):
        if endpoint in PUBLIC:
            continue
        response = call(client, method, url, token)
        assert response.status_code == 303, (endpoint, method, response.status_code)
        assert response.headers["Location"].startswith("/support/login"), endpoint


def test_only_the_sign_in_steps_are_public(app):
    public = {e for e, _, _ in support_routes(app)
              if getattr(app.view_functions[e], "support_public", False)}
    assert public == PUBLIC


def test_every_admin_route_refuses_an_agent(app, agent_client):
    token = token_of(agent_client, "/support/account")
    admin_routes = [r for r in support_routes(app) if is_admin_only(app, r[0])]
    assert {e for e, _, _ in admin_routes} >= {
        "support.staff_list", "support.staff_create", "support.staff_update", "support.tokens",
        "support.token_create", "support.token_revoke", "support.audit_log", "support.imports",
        "support.import_upload", "support.import_status", "support.export_csv"}
    for endpoint, method, url in admin_routes:
        response = call(agent_client, method, url, token)
        assert response.status_code == 403, (endpoint, method, response.status_code)


@pytest.mark.parametrize("path", ["/support/", "/support/customers", "/support/account"])
def test_agents_reach_the_everyday_pages(agent_client, path):
    response = agent_client.get(path)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_admin_reaches_the_admin_pages(admin_client):
    for path in ("/support/admin/staff", "/support/admin/tokens", "/support/admin/audit",
                 "/support/admin/imports"):
        assert admin_client.get(path).status_code == 200, path


def test_a_post_without_the_csrf_token_is_refused_with_400(agent_client, make_customer):
    customer = make_customer()
    response = agent_client.post(f"/support/customers/{customer.id}/link",
                                 data={"reason": "customer asked"})
    assert response.status_code == 400
    assert "Please try again" in response.get_data(as_text=True)


def test_the_login_form_itself_needs_the_csrf_token(client, agent):
    response = client.post("/support/login", data={"email": agent.email,
                                                   "password": agent.password})
    assert response.status_code == 400


def test_anonymous_get_keeps_where_it_was_going_in_next(client):
    response = client.get("/support/customers?q=abc")
    assert response.status_code == 303
    assert response.headers["Location"] == "/support/login?next=/support/customers?q%3Dabc"
