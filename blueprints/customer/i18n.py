"""The customer's language on their pages: theirs when we know whose link it is, else the
browser's (Accept-Language), among the languages the emails ship in (cardbridge/email/mailer.py).

Pages render through that language's own Jinja environment with its catalogue installed, the
same way emails do (cardbridge/email/mailer.language).
"""

from __future__ import annotations

from flask import current_app, g, request

from cardbridge.email.mailer import (
    DEFAULT_LOCALE,
    Language,
    language,
    pick_locale,
    shipped_locales,
)


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
