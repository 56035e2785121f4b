"""The database unreachable: every kind of caller gets a clear 503 that says to try again
(customers in their language, scripts as JSON, staff in the console), never a 500."""

from __future__ import annotations

import secrets

import pytest

from cardbridge.links.service import token_for
from cardbridge.models import Link
from cardbridge.models.types import utcnow
from tests.testlib import csrf_from

DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:9/nothing_listens_here"


@pytest.fixture
def down_app(make_app):
    return make_app(create_schema=False, SQLALCHEMY_DATABASE_URI=DEAD_DATABASE)


def a_token(app) -> str:
    with app.app_context():
        return token_for(Link(public_id=secrets.token_urlsafe(16), created_at=utcnow()))


def test_the_customers_page_says_try_again_in_their_language(down_app):
    client = down_app.test_client()
    response = client.get(f"/u/{a_token(down_app)}", headers={"Accept-Language": "fr"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    html = response.get_data(as_text=True)
    assert "Réessayez dans une minute" in html and "Rien n’a été modifié" in html


def test_the_json_api_says_unavailable(down_app):
    client = down_app.test_client()
    bearer = "Bearer cbk_" + secrets.token_urlsafe(32)
    api = client.get("/api/v1/customers/C-1", headers={"Authorization": bearer})
    assert api.status_code == 503
    assert api.get_json() == {"error": "unavailable", "message": (
        "We cannot reach our records just now. Nothing was changed; please try again in a "
        "minute.")}


def test_the_console_sign_in_says_try_again(down_app):
    client = down_app.test_client()
    response = client.get("/support/login")
    if response.status_code == 200:  # the form itself needs no database; signing in does
        response = client.post("/support/login", data={
            "email": "a@example.com", "password": "x" * 20,
            "csrf_token": csrf_from(response.get_data(as_text=True))})
    assert response.status_code == 503
    assert "Please try again in a minute" in response.get_data(as_text=True)
