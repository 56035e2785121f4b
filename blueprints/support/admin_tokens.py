"""Admins manage API tokens: create one (its secret shown once) and revoke."""

from __future__ import annotations

from flask import abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from blueprints.support import bp
from blueprints.support.guard import admin_only, client_ip
from blueprints.support.inputs import form_reason
from cardbridge.extensions import db
from cardbridge.models import ApiToken
from cardbridge.staff import api_tokens, audit


def _page(status: int = 200, **context):
    return render_template("support/admin_tokens.html", tokens=api_tokens.all_tokens(),
                           **context), status


@bp.get("/admin/tokens")
@admin_only
def tokens():
    return _page()


@bp.post("/admin/tokens")
@admin_only
def token_create():
    name = request.form.get("name", "")
    reason = form_reason()
    if reason is None:
        return _page(400, create_error="Say what the token is for.", name=name)
    try:
        made = api_tokens.create_token(name, created_by=current_user.email)
    except api_tokens.TokenError as exc:
        db.session.rollback()
        return _page(400, create_error=str(exc).capitalize() + ".", name=name)
    audit.record(current_user.email, "api_token.created", made.token.name, ip=client_ip(),
                 reason=reason, details={"prefix": made.token.prefix})
    db.session.commit()
    response = make_response(render_template("support/token_created.html", token=made.token,
                                             secret=made.secret))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/admin/tokens/<int:token_id>/revoke")
@admin_only
def token_revoke(token_id: int):
    token = db.session.get(ApiToken, token_id)
    if token is None:
        abort(404)
    reason = form_reason()
    if reason is None:
        return _page(400, row_error=(token.id, "Say why in a few words."))
    if api_tokens.revoke_token(token):
        audit.record(current_user.email, "api_token.revoked", token.name, ip=client_ip(),
                     reason=reason)
        db.session.commit()
        flash(f"Token {token.name} is revoked; calls with it now get 401.", "success")
    return redirect(url_for("support.tokens"), code=303)
