"""The customer's language on their pages: theirs when we know whose link it is, else the
browser's (Accept-Language), among the languages the emails ship in (services/mailer.py).

Pages render through that language's own Jinja overlay with its catalogue installed, the same
way emails do: no per-string locale lookup on the hottest route.
"""

from __future__ import annotations

import re

from flask import current_app, g, request
from markupsafe import escape

from security import csrf_token
from services.mailer import DEFAULT_LOCALE, Language, language, pick_locale, shipped_locales


def choose(customer_locale: str | None = None) -> Language:
    """Settle this request's language (the customer's `locale` wins over the browser's)."""
    if customer_locale:
        code = pick_locale(customer_locale)
    else:
        code = request.accept_languages.best_match(shipped_locales(), default=DEFAULT_LOCALE)
    g.page_language = found = language(code)
    return found


def current() -> Language:
    return g.get("page_language") or choose()


def _(message: str, **variables) -> str:
    """A message for the customer (JSON errors the page's script shows), in their language."""
    return current().gettext(message, **variables)


def render(template_name: str, /, **context) -> str:
    lang = current()
    context["lang"] = lang.code
    current_app.update_template_context(context)
    return lang.env.get_template(template_name).render(context)


# -- the update page: rendered once per shape, then only filled in --------------------------------
_SLOT = re.compile(r"@@cb:([a-z_0-9]+)@@")
# Settings the page prints: part of a skeleton's shape, so a changed setting is a new skeleton.
_PAGE_SETTINGS = ("COMPANY_NAME", "BRAND_COLOR", "LOGO_URL", "SUPPORT_EMAIL", "CHECKOUT_CURRENCY")
_MAX_SKELETONS = 512


def render_filled(template_name: str, values: dict[str, str | None], /, **context) -> str:
    """`template_name` rendered with `values` (per customer) and `context` (the page's shape).

    Like emails (services/mailer.render): the template runs once per shape with a marker in
    place of each per-customer value, the CSRF token and the CSP nonce; each request then only
    fills the markers in, HTML-escaped. Which values are present is part of the shape, so every
    `{% if %}` still sees the real thing; the shape never holds a customer's data, so a few
    skeletons serve every customer. Values must only appear as HTML text or in a double-quoted
    attribute, where escaping is all they need.
    """
    lang = current()
    present = {k: v for k, v in values.items() if v}
    config = current_app.config
    shape = (template_name, lang.code, tuple(sorted(present)), tuple(sorted(context.items())),
             request.script_root, tuple(config.get(k) for k in _PAGE_SETTINGS))
    cache = current_app.extensions.setdefault("page_skeletons", {})
    skeleton = cache.get(shape)
    if skeleton is None:
        marked = {**context, **{k: f"@@cb:{k}@@" for k in present},
                  "csrf_token": lambda: "@@cb:csrf_token@@",
                  "csp_nonce": lambda: "@@cb:csp_nonce@@"}
        skeleton = render(template_name, **marked)
        if len(cache) < _MAX_SKELETONS:
            cache[shape] = skeleton
    filled = {k: str(escape(v)) for k, v in present.items()}
    filled["csrf_token"] = str(escape(csrf_token()))
    filled["csp_nonce"] = g.get("csp_nonce", "")
    return _SLOT.sub(lambda m: filled[m.group(1)], skeleton)
