"""/support/… — the staff console: one login/role guard (guard.py) covers every route here."""

from flask import Blueprint

bp = Blueprint("support", __name__, url_prefix="/support")

# Routes register on import; guard.py holds the blueprint's only before_request hook.
from blueprints.support import (  # noqa: E402,F401
    account,
    admin_audit,
    admin_drift,
    admin_imports,
    admin_staff,
    admin_subscriptions,
    admin_tokens,
    auth,
    campaigns,
    customers,
    dashboard,
    guard,
)
