"""/healthz is liveness (this process only); /readyz names the dependency that does not answer,
and answers quickly even when the dependency hangs rather than refuses."""

from __future__ import annotations

import socket
import time
from contextlib import contextmanager

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.testlib import free_port


@contextmanager
def silent_server():
    """A port that completes the TCP handshake and then says nothing: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_both_probes_answer_ok_when_everything_answers(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_stays_up_while_readyz_says_the_database_is_down(make_app):
    # A PostgreSQL address where nothing listens: the real driver, a real refused connection.
    app = make_app(create_schema=False, SQLALCHEMY_DATABASE_URI=(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unreachable"}
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_gives_up_on_a_hung_database_within_the_connect_timeout(make_app):
    with silent_server() as port:
        app = make_app(create_schema=False, DATABASE_CONNECT_TIMEOUT_SECONDS=1,
                       SQLALCHEMY_DATABASE_URI=f"postgresql+psycopg://u@127.0.0.1:{port}/x")
        client = app.test_client()
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.get_json()["database"] == "unreachable"
    assert elapsed < 5, elapsed


def test_readyz_names_redis_when_it_does_not_answer(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "ok",
                                   "redis": "unreachable"}


def test_readyz_gives_up_on_a_hung_redis_quickly(make_app):
    with silent_server() as port:
        app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")
        started = time.monotonic()
        response = app.test_client().get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.get_json()["redis"] == "unreachable"
    assert elapsed < 4, elapsed


def test_probes_need_no_session_cookie_and_set_none(client):
    for path in ("/healthz", "/readyz"):
        response = client.get(path)
        assert "Set-Cookie" not in response.headers, path


@pytest.mark.redis
def test_readyz_asks_a_real_redis(make_app):
    app = make_app(REDIS_URL=TEST_REDIS_URL)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "redis": "ok"}
