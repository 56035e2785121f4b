"""Console fixtures: an app with two-factor off unless a test turns it on, and signed-in clients."""

from __future__ import annotations

import pytest

from tests.support.staff_helpers import FAST_HASH, create_staff, sign_in


@pytest.fixture
def app(make_app):
    return make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH)


@pytest.fixture
def agent(app):
    return create_staff(app, "agent@example.com", "agent")


@pytest.fixture
def admin(app):
    return create_staff(app, "admin@example.com", "admin")


@pytest.fixture
def agent_client(app, agent):
    client = app.test_client()
    assert sign_in(client, agent).status_code == 303
    return client


@pytest.fixture
def admin_client(app, admin):
    client = app.test_client()
    assert sign_in(client, admin).status_code == 303
    return client
