"""create_app: config → extensions → blueprints → errors → commands. Nothing else."""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

from cardbridge.config import derive, load_config
from cardbridge.extensions import csrf, db, limiter, login_manager, migrate
from cardbridge.staff import accounts as staff_service
from cardbridge.web import logs, observe, security


def create_app(config: Mapping | None = None) -> Flask:
    config = dict(config or {})
    app = Flask(__name__, instance_path=config.pop("INSTANCE_PATH", None),
                instance_relative_config=True)
    env = dict(os.environ)
    if config.get("TESTING"):
        env["CARDBRIDGE_TESTING"] = "1"
    app.config.from_mapping(load_config(app.instance_path, env))
    app.config.update(config)
    derive(app.config, explicit=frozenset(config))
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    register_template_helpers(app)
    return app


def register_template_helpers(app: Flask) -> None:
    """Jinja globals for the hot pages: computed once per process instead of on every render."""
    import hashlib
    from functools import lru_cache

    from flask import g, request

    static_dir = app.static_folder or ""

    @lru_cache(maxsize=128)
    def _static(script_root: str, filename: str) -> str:
        # A content hash in the URL: browsers may keep the file, and a deploy changes the URL.
        try:
            with open(os.path.join(static_dir, filename), "rb") as fh:
                version = hashlib.sha256(fh.read()).hexdigest()[:10]
        except OSError:
            version = ""
        url = f"{script_root}{app.static_url_path}/{filename}"
        return f"{url}?v={version}" if version else url

    def static_url(filename: str) -> str:
        # In debug the files change under a running server: hash them afresh each time.
        build = _static.__wrapped__ if app.debug else _static
        return build(request.script_root, filename)

    app.jinja_env.globals["static_url"] = static_url
    app.jinja_env.globals["csp_nonce"] = lambda: g.get("csp_nonce", "")


def register_extensions(app: Flask) -> None:
    from cardbridge.stripe_gateway import StripeGateway

    logs.init_app(app)
    observe.init_app(app)  # request metrics (first after the request id: it times the rest)
    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "migrations"))
    security.bound_request_bodies(app)  # before CSRF, which reads the body
    csrf.init_app(app)
    # The limiter is one object for every app in the process and keeps `enabled` from the
    # last app that turned it off; each app starts from its own RATELIMIT_ENABLED instead.
    limiter.enabled = True
    limiter.init_app(app)
    login_manager.init_app(app)
    security.init_app(app)
    staff_service.init_app(app)  # the unknown-email dummy hash, made before any visitor
    from cardbridge.delivery.queue import (
        init_app as init_queue_mail_babel,  # huey, Flask-Mail, Babel
    )
    init_queue_mail_babel(app)
    app.extensions.setdefault("stripe_gateway", StripeGateway.from_config(app.config))
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        from sqlalchemy import event

        with app.app_context():

            @event.listens_for(db.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=10000")
                cur.close()


def register_blueprints(app: Flask) -> None:
    from blueprints.api import bp as api_bp
    from blueprints.csp import bp as csp_bp
    from blueprints.customer import bp as customer_bp
    from blueprints.health import bp as health_bp
    from blueprints.hooks_email import bp as hooks_email_bp
    from blueprints.support import bp as support_bp
    from blueprints.webhooks import bp as webhooks_bp

    for bp in (customer_bp, webhooks_bp, health_bp, csp_bp):
        app.register_blueprint(bp)
    app.register_blueprint(support_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(hooks_email_bp)


def register_error_handlers(app: Flask) -> None:
    from blueprints.errors import register

    register(app)


def register_commands(app: Flask) -> None:
    from cardbridge.cli import register

    register(app)
