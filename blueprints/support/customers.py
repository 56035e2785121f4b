"""Finding a customer and acting on their links: generate (shown once), email, revoke all."""

from __future__ import annotations

from functools import wraps

from flask import (
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from blueprints.support import bp
from blueprints.support.guard import client_ip
from blueprints.support.inputs import form_reason, page_number
from cardbridge.customers import lookup as customer_lookup
from cardbridge.extensions import db, limiter
from cardbridge.links import actions as link_actions
from cardbridge.models import Customer


def _link_limit() -> str:
    return current_app.config.get("STAFF_LINK_LIMIT", "60 per hour")


def _per_staff_key() -> str:
    return "staff-links:" + str(current_user.get_id() if current_user.is_authenticated else "")


# Anti-automation on actions that make links and send email (ASVS 2.4.1).
per_staff = limiter.shared_limit(_link_limit, scope="staff-links", key_func=_per_staff_key,
                                 methods=["POST"])


def per_customer(view):
    """The customer's own link budget, shared with /api/v1 (link_actions.take_link_slot)."""
    @wraps(view)
    def limited(customer_id: int):
        if not link_actions.take_link_slot(customer_id):
            abort(429)
        return view(customer_id)

    return limited


@bp.get("/customers")
def customers():
    q = request.args.get("q", "").strip()
    page = page_number()
    rows, has_next = customer_lookup.search(q, page)
    if q and page == 1 and len(rows) == 1 and not has_next:
        return redirect(url_for("support.customer", customer_id=rows[0].id))
    return render_template("support/customers.html", q=q, rows=rows, page=page,
                           has_next=has_next)


def _customer_or_404(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        abort(404)
    return customer


def _render_customer(customer: Customer, *, reason_error: str | None = None, status: int = 200):
    file = customer_lookup.customer_file(customer)
    return render_template("support/customer.html", file=file, c=customer,
                           reason_error=reason_error), status


@bp.get("/customers/<int:customer_id>")
def customer(customer_id: int):
    return _render_customer(_customer_or_404(customer_id))


NEED_REASON = "Say why in a few words (for example “customer says the email never came”)."


@bp.post("/customers/<int:customer_id>/link")
@per_staff
@per_customer
def generate_link(customer_id: int):
    customer = _customer_or_404(customer_id)
    reason = form_reason()
    if reason is None:
        return _render_customer(customer, reason_error=NEED_REASON, status=400)
    issued = link_actions.give_link(customer, actor=current_user.email, ip=client_ip(),
                                    reason=reason, send=False)
    db.session.commit()
    # Shown once, on this response only: the URL is never stored or put in a redirect.
    response = make_response(render_template("support/link_issued.html", c=customer,
                                             issued=issued))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/customers/<int:customer_id>/send")
@per_staff
@per_customer
def send_link(customer_id: int):
    customer = _customer_or_404(customer_id)
    reason = form_reason()
    if reason is None:
        return _render_customer(customer, reason_error=NEED_REASON, status=400)
    link_actions.give_link(customer, actor=current_user.email, ip=client_ip(), reason=reason,
                           send=True)
    db.session.commit()
    flash(f"A link email to {customer.email} is queued. Earlier links no longer work.",
          "success")
    return redirect(url_for("support.customer", customer_id=customer.id), code=303)


@bp.post("/customers/<int:customer_id>/revoke")
@per_staff
def revoke_links(customer_id: int):
    customer = _customer_or_404(customer_id)
    reason = form_reason()
    if reason is None:
        return _render_customer(customer, reason_error=NEED_REASON, status=400)
    count = link_actions.revoke_all(customer, actor=current_user.email, ip=client_ip(),
                                    reason=reason)
    db.session.commit()
    flash(f"Revoked {count} live link{'s' if count != 1 else ''}." if count
          else "There was no live link to revoke.", "success")
    return redirect(url_for("support.customer", customer_id=customer.id), code=303)
