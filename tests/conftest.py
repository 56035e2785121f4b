"""Shared fixtures: app on SQLite (or PostgreSQL with TEST_DATABASE_URL), clients, CSRF helper,
a localstripe server, a live HTTP server for the browser, and small factories."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

from app import create_app
from cardbridge.extensions import db
from cardbridge.models import Customer
from tests.testlib import PUBLIC_BASE_URL, WEBHOOK_SECRET, csrf_from, free_port  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")


def pytest_collection_modifyitems(config, items):
    skip_pg = pytest.mark.skip(reason="needs TEST_DATABASE_URL (PostgreSQL)")
    skip_redis = pytest.mark.skip(reason="needs TEST_REDIS_URL (Redis)")
    skip_browser = pytest.mark.skip(reason="needs Debian chromium at /usr/bin/chromium")
    for item in items:
        if "postgres" in item.keywords and not TEST_DATABASE_URL:
            item.add_marker(skip_pg)
        if "redis" in item.keywords and not TEST_REDIS_URL:
            item.add_marker(skip_redis)
        if "e2e" in item.keywords and not os.path.exists("/usr/bin/chromium"):
            item.add_marker(skip_browser)


# -- database ------------------------------------------------------------------------------------
_pg_schema_ready = False


def _reset_database(app) -> None:
    global _pg_schema_ready
    with app.app_context():
        if TEST_DATABASE_URL:
            if not _pg_schema_ready:
                db.drop_all()
                with db.engine.begin() as conn:
                    conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
                db.create_all()
                _pg_schema_ready = True
            else:
                tables = ", ".join(t.name for t in db.metadata.sorted_tables)
                with db.engine.begin() as conn:
                    conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        else:
            db.create_all()


@pytest.fixture
def make_app(tmp_path):
    """Factory: make_app(**config) → a Flask app with a fresh, empty database."""
    made = []

    def factory(*, create_schema: bool = True, **overrides):
        config = {
            "TESTING": True,
            "INSTANCE_PATH": str(tmp_path / f"instance{len(made)}"),
            "SECRET_KEY": "test-secret-key-not-for-production",
            "LINK_SECRET_KEYS": ["test-link-key"],
            "SQLALCHEMY_DATABASE_URI": TEST_DATABASE_URL
            or f"sqlite:///{tmp_path / 'cardbridge.db'}",
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": "http://127.0.0.1:9",  # nothing listens: tests that talk to
            "STRIPE_MAX_RETRIES": 0,  #               Stripe say so with a fixture
            "RATELIMIT_STORAGE_URI": "memory://",
        }
        config.update(overrides)
        app = create_app(config)
        if not made and create_schema:
            _reset_database(app)
        made.append(app)
        return app

    yield factory
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


# -- CSRF: one helper reads the token and posts it -----------------------------------------------
@pytest.fixture
def csrf(client):
    """csrf(path) → the CSRF token of the page at `path` in this client's session."""

    def read(path: str) -> str:
        return csrf_from(client.get(path).get_data(as_text=True))

    return read


# -- factories -----------------------------------------------------------------------------------
@pytest.fixture
def make_customer(app):
    counter = iter(range(1, 10**6))

    def factory(**fields) -> Customer:
        n = next(counter)
        values = {"legacy_id": f"legacy-{n}", "email": f"customer{n}@example.com",
                  "name": f"Customer {n}", "status": "needs_update"}
        values.update(fields)
        with app.app_context():
            customer = Customer(**values)
            db.session.add(customer)
            db.session.commit()
            db.session.refresh(customer)
            db.session.expunge(customer)
        return customer

    return factory


# -- a fake Stripe that answers what a test tells it to (5xx, 429, timeouts) --------------------
@pytest.fixture
def fault():
    from fault_server import FaultServer

    server = FaultServer()
    yield server
    server.close()


# -- localstripe ---------------------------------------------------------------------------------
@contextmanager
def fake_stripe(workdir, *flags: str):
    """A real localstripe (from PyPI, extended by devtools/) on a free port; yields its URL."""
    port = free_port()
    log = open(workdir / f"localstripe-{port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.localstripe_server", "--port", str(port),
         "--from-scratch", *flags],
        cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(url + "/js.stripe.com/v3/", timeout=1).read()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("localstripe did not start; see " + str(log.name)) from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory):
    """A real localstripe (from PyPI, with cardbridge's extensions) for this test run."""
    with fake_stripe(tmp_path_factory.mktemp("localstripe")) as url:
        yield url


@pytest.fixture
def own_localstripe(tmp_path):
    """A localstripe of this test's own: webhook endpoints registered on it (which localstripe
    cannot unregister) and the events it keeps reach no other test."""
    with fake_stripe(tmp_path) as url:
        yield url


@pytest.fixture
def stripe_app(make_app, localstripe_url):
    """An app whose Stripe is the localstripe server."""
    return make_app(STRIPE_API_BASE=localstripe_url,
                    STRIPE_JS_URL=f"{localstripe_url}/js.stripe.com/v3/",
                    STRIPE_SECRET_KEY="sk_test_cardbridge", STRIPE_MAX_RETRIES=0)


# -- a live server for the browser ---------------------------------------------------------------
def _buffered(app):
    """Read each response whole before werkzeug writes it.

    When the browser drops a connection mid-response (a page closed while a stylesheet is still
    on the wire), werkzeug's dev server raises before it closes the response iterable, and the
    open static file surfaces later as a ResourceWarning in whatever test runs next. Buffering
    closes the file before the first byte goes out.
    """
    def wsgi(environ, start_response):
        body = app(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            if hasattr(body, "close"):
                body.close()
    return wsgi


class LiveServer:
    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app.config["PUBLIC_BASE_URL"] = self.url
        self._server = make_server("127.0.0.1", self.port, _buffered(app), threaded=True)
        # A short poll interval: shutdown() waits up to one interval, once per browser test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture
def live_server_for():
    """live_server_for(app) → a running LiveServer; PUBLIC_BASE_URL follows its port."""
    servers = []

    def start(app):
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
