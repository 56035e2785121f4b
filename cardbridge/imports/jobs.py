"""Imports started from the console, run in the background through cardbridge/imports/service.py.

The result of every run is an ImportRun row written by the import service (counts, the first
row errors, a file-level message); that is what the page shows once a run ends. While a file is
queued or running, its progress lives in a small JSON file under instance/import-jobs/, so every
web worker on the machine shows the same progress.

The work runs on the task queue's worker, never in a web process (a big file would hold a web
worker for minutes): the upload and the job file are written under instance/, and the worker
reads them from there, so the web and worker processes must share instance/ (they do on one
machine; on several, mount it shared). It commits once, like every task.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.imports import service as imports
from cardbridge.imports.service import ImportFileError, failed_run
from cardbridge.models import ImportRun
from cardbridge.models.types import utcnow

log = logging.getLogger(__name__)
KINDS = ("roster", "mapping")
# A job file not touched for this long belongs to a process that died (its transaction rolled
# back, so nothing was applied): show it as interrupted rather than running for ever.
STALE_AFTER_SECONDS = 15 * 60
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")

Runner = Callable[[str, Path, str, Callable], int]  # returns the ImportRun id


def jobs_dir(app: Flask | None = None) -> Path:
    path = Path((app or current_app).instance_path) / "import-jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write(path: Path, state: dict) -> None:
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(state, default=str))
    os.replace(tmp, path)  # readers never see half a file


def _read(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if state.get("state") in ("queued", "running") and age > STALE_AFTER_SECONDS:
        state["state"] = "interrupted"
        state["message"] = "The import stopped (the server restarted?). Nothing was applied; " \
                           "upload the file again."
    return state


def read_job(job_id: str, app: Flask | None = None) -> dict | None:
    if not _JOB_ID.fullmatch(job_id or ""):
        return None
    return _read(jobs_dir(app) / f"{job_id}.json")


def recent_jobs(limit: int = 20, app: Flask | None = None) -> list[dict]:
    files = sorted(jobs_dir(app).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    jobs = [job for job in (_read(p) for p in files[:limit]) if job is not None]
    return sorted(jobs, key=lambda j: j.get("created_at", ""), reverse=True)


def recent_runs(limit: int = 20) -> list[ImportRun]:
    return list(db.session.execute(
        select(ImportRun).order_by(ImportRun.id.desc()).limit(limit)
    ).scalars())


def start_import(kind: str, upload_path: Path, original_name: str, *, actor: str) -> dict:
    """Record a queued job; the caller hands its id to the task queue's worker
    (delivery/tasks.run_console_import). Returns the job state."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    app = current_app._get_current_object()
    job_id = f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"
    state = {"id": job_id, "kind": kind, "file": original_name[:255], "actor": actor,
             "state": "queued", "rows": 0, "bytes": 0, "size": upload_path.stat().st_size,
             "upload": upload_path.name, "run_id": None, "message": "",
             "created_at": utcnow().isoformat(), "finished_at": None}
    _write(jobs_dir(app) / f"{job_id}.json", state)
    return state


def run_job(job_id: str, runner: Runner | None = None) -> dict | None:
    """The worker's side: run a queued console import (inside the task's app context)."""
    if not _JOB_ID.fullmatch(job_id or ""):
        return None
    app = current_app._get_current_object()
    path = jobs_dir(app) / f"{job_id}.json"
    state = _read(path)
    if state is None or state.get("state") != "queued":
        return state  # already run (a retried task), or gone
    upload_path = uploads_dir(app) / Path(state["upload"]).name
    _run(app, path, state, upload_path, runner)
    return state


def _call_service(kind: str, upload_path: Path, name: str, progress: Callable) -> int:

    func = imports.import_roster if kind == "roster" else imports.import_mapping
    return func(str(upload_path), name=name, strict=False, progress=progress).run_id


def _run(app: Flask, path: Path, state: dict, upload_path: Path, runner: Runner | None) -> None:

    last_write = [0.0]

    def progress(rows: int = 0, done_bytes: int = 0, size: int = 0, *_args) -> None:
        state["rows"], state["bytes"] = rows, done_bytes
        if time.monotonic() - last_write[0] > 0.5:  # a few writes a second at most
            last_write[0] = time.monotonic()
            _write(path, state)

    with app.app_context():
        state["state"] = "running"
        _write(path, state)
        if not upload_path.exists():
            state["state"], state["finished_at"] = "failed", utcnow().isoformat()
            state["message"] = ("The uploaded file is not on the worker's disk: the web and "
                                "worker processes must share instance/. Nothing was applied.")
            _write(path, state)
            return
        try:
            run_id = (runner or _call_service)(state["kind"], upload_path, state["file"],
                                               progress)
            db.session.commit()
            state["state"], state["run_id"] = "done", run_id
        except ImportFileError as exc:  # the file as a whole was refused; nothing applied
            db.session.rollback()
            failed = failed_run(exc)
            if failed is not None:
                db.session.add(failed)
                db.session.commit()
                state["run_id"] = failed.id
            state["state"], state["message"] = "failed", str(exc)[:500]
        except Exception as exc:  # the page must say it failed, whatever the reason
            db.session.rollback()
            log.exception("console import %s failed", state["id"])
            state["state"] = "failed"
            detail = (str(exc).splitlines() or [""])[0][:200]
            state["message"] = (f"The import failed ({type(exc).__name__}: {detail}); nothing "
                                "was applied.")
        finally:
            db.session.remove()
            state["finished_at"] = utcnow().isoformat()
            _write(path, state)
            try:
                upload_path.unlink()
            except OSError:
                pass


def uploads_dir(app: Flask | None = None) -> Path:
    folder = Path((app or current_app).instance_path) / "uploads"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def save_upload(stream, filename: str, app: Flask | None = None) -> Path:
    """Store an uploaded file under instance/uploads/ with a safe, unique name."""
    folder = uploads_dir(app)
    name = _SAFE_NAME.sub("_", Path(filename or "upload").name)[-80:] or "upload"
    path = folder / f"{secrets.token_hex(8)}-{name}"
    with open(path, "wb") as fh:
        while chunk := stream.read(1 << 20):
            fh.write(chunk)
    return path
