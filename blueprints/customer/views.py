"""The update page and the POSTs its script makes. GET and HEAD never change anything."""

from __future__ import annotations

import logging
import re

from flask import (
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)

from blueprints.customer import bp
from blueprints.customer.i18n import _, choose, render
from cardbridge.email.mailer import pick_locale
from cardbridge.extensions import db, limiter
from cardbridge.links.service import (
    LinkError,
    find_link,
    load_link,
    token_for,
)
from cardbridge.models import CustomerEvent, Link
from cardbridge.models.types import utcnow
from cardbridge.payments import card_setup
from cardbridge.payments.recording import Recorded, SetupNotFinished, SetupNotOurs
from cardbridge.stripe_gateway import (
    CardDeclined,
    GatewayError,
    StripeRejected,
    StripeUnavailable,
)
from cardbridge.web.security import link_page, stripe_page

log = logging.getLogger(__name__)

INVALID_STATUS = {"tampered": 404, "expired": 410, "revoked": 410, "used": 410}
# Stripe's ids: a prefix, then letters, digits and underscores (`cs_test_a1B2…`). Anything else
# is refused before it reaches Stripe, so a stranger cannot make us send it what they like.
SETUP_INTENT_ID = re.compile(r"seti_[A-Za-z0-9_]{1,200}")
CHECKOUT_SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,250}")
# The pages Stripe sends a browser back to take no token, so each one costs a Stripe read:
# per address, generous for a person (a few tries), tight for a script.
RETURN_LIMIT = "10/minute;60/hour"


def gateway():
    return current_app.extensions["stripe_gateway"]


def invalid_link_page(err: LinkError, token: str = ""):
    if err.locale:
        choose(err.locale)
    if err.link is not None and err.link.customer.purged_at is not None:
        # `flask purge` ran: the link is over whatever its state, and no address is left to
        # email a fresh one to, so the page does not offer it.
        return render("customer/invalid.html", reason="expired", token="", no_address=True), 410
    return (
        render("customer/invalid.html", reason=err.reason, token=token),
        INVALID_STATUS.get(err.reason, 404),
    )


def _deadline(link: Link):
    cutover = current_app.config.get("CUTOVER_DATE")
    expires = link.expires_at.date()
    return min(cutover, expires) if cutover else expires


@bp.route("/<token>", methods=["GET"])
@link_page
def page(token: str):
    try:
        link = load_link(token)
    except LinkError as err:
        return invalid_link_page(err, token)
    customer = link.customer
    lang = choose(customer.locale)
    form = current_app.config["CARD_FORM"]
    if session.get("link") != link.public_id:  # an unchanged session is not re-signed
        # Lets Checkout's cancel page bring the customer back. The public id, not the token:
        # a cookie read on a shared computer must not be a way into the page.
        session["link"] = link.public_id
    g.csp_stripe = "checkout" if form == "checkout" else "elements"  # Stripe hosts: this page only
    card = customer.known_card() or {}
    expiry = (f"{card['exp_month']:02d}/{card['exp_year']}"
              if card.get("exp_month") and card.get("exp_year") else None)
    config = current_app.config
    return render(
        "customer/update.html",
        **{
            "page_url": url_for("customer.page", token=token),
            "name": customer.name,
            "email": customer.email,
            "reference": customer.legacy_id,
            "deadline": lang.day(_deadline(link)),
            "card_brand": (card.get("brand") or lang.gettext("Card")).capitalize()
            if card.get("last4") else None,
            "card_last4": card.get("last4"),
            "card_expiry": expiry,
        },
        lang=lang.code,
        card_form=form,
        stripe_js_url=config["STRIPE_JS_URL"],
        publishable_key=config["STRIPE_PUBLISHABLE_KEY"],
        return_url=f"{config['PUBLIC_BASE_URL']}/u/return",
        # Stripe sent the customer back unconfirmed (failed 3-D Secure, …): say so on the form.
        retry=request.args.get("retry") == "1",
    )


def _json_error(message: str, status: int, *, retry: bool = True, code: str = "error"):
    return jsonify(error=code, message=message, retry=retry), status


@bp.post("/<token>/opened")
@link_page
def opened(token: str):
    """The page's script says a person (not a scanner's GET) opened the page."""
    try:
        link = load_link(token)
    except LinkError:
        return _json_error(_("This link can no longer be used."), 410, retry=False, code="link")
    if link.opened_at is None:
        link.opened_at = utcnow()
        db.session.add(CustomerEvent(customer_id=link.customer_id, link_id=link.id,
                                     kind="page_opened"))
        db.session.commit()
    return jsonify(ok=True)


@bp.post("/<token>/intent")
@link_page
def intent(token: str):
    try:
        link = load_link(token)
    except LinkError:
        return _json_error(_("This link can no longer be used. Reload the page."), 410,
                           retry=False, code="link")
    choose(link.customer.locale)
    try:
        setup_intent = card_setup.open_setup_intent(link, gateway())
    except StripeUnavailable:
        db.session.rollback()
        return _json_error(_("We could not reach our payment provider. Please try again in a "
                             "minute; nothing was saved."), 503, code="unavailable")
    except GatewayError:
        db.session.rollback()
        log.exception("setup intent failed link=%s", link.public_id)
        return _json_error(_("Something went wrong on our side. Please try again later."), 502)
    db.session.commit()
    if setup_intent["status"] == "succeeded":
        # Saved before, but the browser never told us (closed tab, lost answer): finish it.
        try:
            recorded = card_setup.finish_setup_intent(setup_intent["id"], gateway(),
                                                      via="browser", link=link)
        except (SetupNotOurs, SetupNotFinished, GatewayError):
            db.session.rollback()
            return _json_error(
                _("Something went wrong on our side. Please try again later."), 502)
        db.session.commit()
        return jsonify(redirect=_done(recorded, link), status="succeeded")
    return jsonify(client_secret=setup_intent["client_secret"], status=setup_intent["status"])


def _done(recorded: Recorded, link: Link):
    session.pop("link", None)
    session["done"] = {"link": link.public_id, "brand": recorded.payment_method.brand,
                       "last4": recorded.payment_method.last4,
                       "lang": pick_locale(link.customer.locale)}
    return url_for("customer.done")


@bp.post("/<token>/complete")
@link_page
def complete(token: str):
    """The browser says Stripe confirmed; we believe Stripe, not the browser."""
    try:
        link = load_link(token, allow_spent=True)
    except LinkError:
        return _json_error(_("This link can no longer be used."), 404, retry=False, code="link")
    choose(link.customer.locale)
    seti_id = (request.get_json(silent=True) or {}).get("setup_intent")
    if not isinstance(seti_id, str) or not SETUP_INTENT_ID.fullmatch(seti_id):
        return _json_error(_("Missing setup reference."), 400, retry=False, code="bad_request")
    try:
        recorded = card_setup.finish_setup_intent(seti_id, gateway(), via="browser", link=link)
    except (SetupNotOurs, StripeRejected):  # not ours, or Stripe knows no such SetupIntent
        db.session.rollback()
        return _json_error(_("That card setup does not belong to this link."), 400, retry=False,
                           code="mismatch")
    except SetupNotFinished as exc:
        db.session.rollback()
        return _json_error(_("Your card was not confirmed yet. Please try again."), 409,
                           code=f"not_finished:{exc.status}")
    except CardDeclined as exc:
        db.session.rollback()
        return _json_error(exc.message, 402, code="declined")
    except StripeUnavailable:
        db.session.rollback()
        return _json_error(_("We could not reach our payment provider. Your card may already "
                             "be saved; please try again in a minute."), 503, code="unavailable")
    except GatewayError:
        db.session.rollback()
        log.exception("finishing setup failed link=%s", link.public_id)
        return _json_error(_("Something went wrong on our side. Please try again later."), 502)
    db.session.commit()
    return jsonify(redirect=_done(recorded, link))


@bp.post("/<token>/checkout")
@link_page
@stripe_page("checkout")
def checkout(token: str):
    try:
        link = load_link(token)
    except LinkError as err:
        return invalid_link_page(err, token)
    choose(link.customer.locale)
    try:
        checkout_session = card_setup.open_checkout_session(link, gateway())
    except StripeUnavailable:
        db.session.rollback()
        return render("customer/retry.html", token=token), 503
    except GatewayError:
        db.session.rollback()
        log.exception("checkout session failed link=%s", link.public_id)
        return render("customer/retry.html", token=token), 502
    db.session.commit()
    return redirect(checkout_session["url"], code=303)


def _session_link() -> Link | None:
    """The live link this browser last opened (the session holds its public id)."""
    public_id = session.get("link")
    link = find_link(public_id) if public_id else None
    return link if link is not None and link.state(utcnow()) == "live" else None


def _finish_return(finish):
    """Shared tail of the two pages Stripe sends the browser back to."""
    try:
        recorded = finish()
    except (SetupNotOurs, SetupNotFinished, StripeRejected):
        db.session.rollback()
        link = _session_link()
        if link is not None:
            return redirect(url_for("customer.page", token=token_for(link), retry=1))
        return invalid_link_page(LinkError("tampered"))
    except StripeUnavailable:
        db.session.rollback()
        link = _session_link()
        return render("customer/retry.html", token=token_for(link) if link else None), 503
    except GatewayError:
        db.session.rollback()
        log.exception("finishing a returned setup failed")
        return render("customer/retry.html", token=None), 502
    db.session.commit()
    link = db.session.get(Link, recorded.payment_method.link_id)
    return redirect(_done(recorded, link), code=303)


@bp.get("/return")
@link_page
@limiter.limit(RETURN_LIMIT)
def payment_element_return():
    """Payment Element redirect target: strips the client secret from the URL at once."""
    seti_id = request.args.get("setup_intent", "")
    if not SETUP_INTENT_ID.fullmatch(seti_id):
        abort(404)
    return _finish_return(
        lambda: card_setup.finish_setup_intent(seti_id, gateway(), via="return")
    )


@bp.get("/checkout/return")
@link_page
@limiter.limit(RETURN_LIMIT)
def checkout_return():
    session_id = request.args.get("session_id", "")
    if not CHECKOUT_SESSION_ID.fullmatch(session_id):
        abort(404)
    return _finish_return(
        lambda: card_setup.finish_checkout_session(session_id, gateway(), via="return")
    )


@bp.get("/resume")
@link_page
def resume():
    link = _session_link()
    if link is not None:
        return redirect(url_for("customer.page", token=token_for(link)))
    return render("customer/resume.html")


@bp.get("/done")
@link_page
def done():
    info = session.get("done")
    if info and info.get("lang"):
        choose(info["lang"])
    return render("customer/done.html", info=info)
