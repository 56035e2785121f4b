"""API fixtures: a token made the way `flask api-token create` makes it."""

from __future__ import annotations

import pytest

from cardbridge.extensions import db
from cardbridge.staff import api_tokens


@pytest.fixture
def make_token(app):
    def factory(name: str = "helpdesk") -> str:
        with app.app_context():
            made = api_tokens.create_token(name, created_by="test")
            db.session.commit()
            return made.secret

    return factory


@pytest.fixture
def token(make_token) -> str:
    return make_token()


@pytest.fixture
def auth(token) -> dict:
    return {"Authorization": f"Bearer {token}"}
