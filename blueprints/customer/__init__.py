"""/u/… — the customer's pages: token links only, Stripe on the page, nothing for staff."""

from flask import Blueprint

bp = Blueprint("customer", __name__, url_prefix="/u")

from blueprints.customer import fresh, views  # noqa: E402,F401  (routes register on import)
