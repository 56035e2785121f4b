""""Email me a fresh link": answers the same whether or not the address exists.

The request does the same work for every address (checks the form, queues one task); the
worker decides who gets what (cardbridge/links/fresh.py).
"""

from __future__ import annotations

from flask import current_app, request

from blueprints.customer import bp
from blueprints.customer.i18n import _, render
from cardbridge.delivery.tasks import send_fresh_link
from cardbridge.extensions import limiter
from cardbridge.links.service import LinkError, public_id_of
from cardbridge.web.security import link_page


def normalize_email(value: str) -> str:
    return (value or "").strip().lower()


def _email_key() -> str:
    return "fresh-email:" + normalize_email(request.form.get("email", ""))[:320]


@bp.post("/fresh")
@link_page
@limiter.limit(lambda: current_app.config["FRESH_LINK_RATE_LIMIT"])
@limiter.limit("3 per hour", key_func=_email_key)
def fresh_link():

    email = normalize_email(request.form.get("email", ""))
    token = request.form.get("token", "")[:512]
    if "@" not in email or len(email) > 320:
        return render("customer/invalid.html", reason="form", token=token,
                      form_error=_("Enter the email address we have on file.")), 400
    try:
        public_id = public_id_of(token) if token else None  # the signature only: no lookup
    except LinkError:
        public_id = None
    send_fresh_link(email, public_id)
    return render("customer/fresh_sent.html")
