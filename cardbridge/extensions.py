"""Unbound extension objects; `create_app` binds them. App-scoped services: app.extensions."""

import os

from flask import Flask, current_app, has_app_context
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_mail import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from huey import Huey, PriorityRedisHuey, SqliteHuey
from huey.storage import BlackHoleStorage, MemoryStorage, RedisStorage
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from cardbridge import correlation


class _NotConfigured(BlackHoleStorage):
    def enqueue(self, data, priority=None):
        raise RuntimeError("the task queue is not configured: create_app() first")


class AppHuey(Huey):
    """Huey that exists before the app does; `init_app` chooses SQLite or Redis storage."""

    def __init__(self, name: str = "cardbridge"):
        super().__init__(name, results=False, utc=True, storage_class=_NotConfigured)
        self.app: Flask | None = None

    def init_app(self, app: Flask) -> None:
        self.name = app.config.get("QUEUE_NAME", "cardbridge")
        redis_url = app.config.get("REDIS_URL")
        immediate = app.config.get("QUEUE_IMMEDIATE")
        if immediate is None:  # tests of other features and `make demo` run no worker
            immediate = bool(app.config.get("TESTING") or app.config.get("DEMO"))
        self._immediate = bool(immediate)
        if self._immediate:
            # Huey's own immediate mode: a task runs in the process that queues it, at once
            # (for email: right after the request's commit). Same code path, no worker.
            self.storage = MemoryStorage(self.name)
        elif redis_url:
            # RedisHuey's priority flavour: a waiting customer's email jumps a wave's backlog.
            self.storage = PriorityRedisHuey.storage_class(self.name, url=redis_url)
        else:
            os.makedirs(app.instance_path, exist_ok=True)
            path = os.path.join(app.instance_path, "huey.db")
            self.storage = SqliteHuey.storage_class(self.name, filename=path)
        self.app = app
        app.extensions["huey"] = self

    @property
    def backend(self) -> str:
        if self._immediate:
            return "immediate"
        return "redis" if isinstance(self.storage, RedisStorage) else "sqlite"

    def execute(self, task, timestamp=None):
        """Huey's own execute, with the task's id on every log line it causes (its own
        "Executing …" line included): JSON logs then tie a worker's lines to one task."""
        with correlation.running_task(task.id):
            return super().execute(task, timestamp)

    def app_context(self):
        """A fresh app context (own database session) of the app running this task."""
        if has_app_context():  # immediate mode, or a burst run from inside an app
            return current_app._get_current_object().app_context()
        if self.app is None:
            raise RuntimeError("the task queue is not configured: create_app() first")
        return self.app.app_context()


# Named constraints so Alembic can drop and alter them on every engine.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])
login_manager = LoginManager()
mail = Mail()
babel = Babel()
huey = AppHuey()  # storage chosen by create_app: SQLite in instance/, or Redis
