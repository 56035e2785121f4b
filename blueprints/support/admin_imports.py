"""Admins upload a roster or mapping file (imported in the background) and download the export."""

from __future__ import annotations

import os
import tempfile

from flask import (
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user

from blueprints.support import bp
from blueprints.support.guard import admin_only, client_ip
from blueprints.support.inputs import form_reason
from cardbridge.customers.reporting import export_csv as write_export
from cardbridge.customers.reporting import refresh_statuses
from cardbridge.delivery import tasks
from cardbridge.extensions import db
from cardbridge.imports import jobs as import_jobs
from cardbridge.staff import audit


def _runs_context() -> dict:
    jobs = [j for j in import_jobs.recent_jobs() if j["state"] != "done" and not j.get("run_id")]
    return {"jobs": jobs, "runs": import_jobs.recent_runs(),
            "running": any(j["state"] in ("queued", "running") for j in jobs)}


def _page(status: int = 200, **context):
    return render_template("support/admin_imports.html", **_runs_context(), **context), status


@bp.get("/admin/imports")
@admin_only
def imports():
    if request.args.get("partial") == "runs":
        # What the page's script polls while an import runs: just the list, no layout.
        context = _runs_context()
        response = make_response(render_template("support/_import_runs.html", **context))
        response.headers["X-Import-Running"] = "1" if context["running"] else "0"
        return response
    return _page()


@bp.post("/admin/imports")
@admin_only
def import_upload():
    kind = request.form.get("kind", "")
    upload = request.files.get("file")
    reason = form_reason()
    if kind not in import_jobs.KINDS:
        return _page(400, upload_error="Choose what the file is: a roster or a mapping.")
    if upload is None or not upload.filename:
        return _page(400, upload_error="Choose a file to upload.")
    if reason is None:
        return _page(400, upload_error="Say why you are importing this file.")
    path = import_jobs.save_upload(upload.stream, upload.filename)
    job = import_jobs.start_import(kind, path, upload.filename, actor=current_user.email)
    tasks.run_console_import(job["id"])  # the worker imports it, never this web process
    audit.record(current_user.email, f"import.{kind}", upload.filename[:255], ip=client_ip(),
                 reason=reason, details={"job": job["id"], "bytes": path.stat().st_size
                                         if path.exists() else None})
    db.session.commit()
    flash(f"{upload.filename} is importing in the background; this page shows its progress.",
          "success")
    return redirect(url_for("support.imports", _anchor=f"job-{job['id']}"), code=303)


@bp.get("/admin/imports/<job_id>.json")
@admin_only
def import_status(job_id: str):
    job = import_jobs.read_job(job_id)
    if job is None:
        abort(404)
    return jsonify({k: job.get(k) for k in ("id", "state", "rows", "counts", "message")})


@bp.post("/admin/export.csv")
@admin_only
def export_csv():
    reason = form_reason()
    if reason is None:
        return _page(400, export_error="Say why you are exporting (it holds every customer).")
    fd, path = tempfile.mkstemp(prefix="export-", suffix=".csv", dir=current_app.instance_path)
    try:
        refresh_statuses()  # expired links and lapsed cards, as `flask export` does first
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            write_export(fh)
        audit.record(current_user.email, "export.csv", None, ip=client_ip(), reason=reason)
        db.session.commit()
        response = send_file(path, mimetype="text/csv", as_attachment=True,
                             download_name="cardbridge-export.csv", max_age=0)
    except BaseException:
        os.unlink(path)
        raise
    response.call_on_close(lambda: os.path.exists(path) and os.unlink(path))
    return response
