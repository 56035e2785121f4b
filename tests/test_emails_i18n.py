"""Every customer email in every shipped language: complete catalogues, nothing left in English."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from jinja2 import StrictUndefined

from cardbridge.email.emails import compose
from cardbridge.email.mailer import pick_locale, shipped_locales
from cardbridge.extensions import db
from cardbridge.models import Customer, Email, Link, SavedPaymentMethod
from cardbridge.models.types import utcnow

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "translations"
OTHER_LANGUAGES = [code for code in shipped_locales() if code != "en"]
KINDS = [("link", None), ("fresh_link", None), ("reminder", "day3"), ("reminder", "cutover"),
         ("confirmation", None)]


def extracted_ids() -> set[str]:
    with open(ROOT / "babel.cfg") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    return {message for _, _, message, _, _ in
            extract_from_dir(ROOT, method_map, options_map)
            if isinstance(message, str)}


def catalogue(code: str):
    with open(TRANSLATIONS / code / "LC_MESSAGES" / "messages.po", "rb") as fh:
        return read_po(fh, locale=code)


def test_english_and_french_ship():
    # Named, not "at least one more": the suite must fail if French stops shipping (its
    # compiled catalogue missing), not quietly test nothing.
    assert shipped_locales()[:1] == ("en",)
    assert "fr" in shipped_locales()


@pytest.mark.parametrize("code", OTHER_LANGUAGES)
def test_catalogue_translates_every_message_and_its_mo_is_compiled(code):
    po = catalogue(code)
    wanted = extracted_ids()
    translated = {m.id: m.string for m in po if m.id and m.string and not m.fuzzy}
    assert wanted - set(translated) == set(), "untranslated (run pybabel extract/update)"
    with open(TRANSLATIONS / code / "LC_MESSAGES" / "messages.mo", "rb") as fh:
        compiled = {m.id: m.string for m in read_mo(fh) if m.id}
    assert compiled == translated, "messages.mo is stale: run pybabel compile -d translations"


@pytest.mark.parametrize("code", ["fr", "fr-CA", "FR_be", "fr_FR.UTF-8"])
def test_customer_locales_map_to_the_shipped_language(code):
    assert pick_locale(code) == ("fr" if "fr" in OTHER_LANGUAGES else "en")


@pytest.mark.parametrize("code", [None, "", "xx", "de-DE-1996", "en-GB"])
def test_unknown_or_missing_locales_fall_back_to_english(code):
    if code and code[:2] in OTHER_LANGUAGES:
        pytest.skip("that language ships")
    assert pick_locale(code) == "en"


def english_fragments(code: str) -> list[str]:
    """Pieces of every translated English message long enough to spot if left untranslated."""
    pieces = []
    for message in catalogue(code):
        if not message.id or message.string == message.id:
            continue
        for piece in re.split(r"%\([a-z_0-9]+\)[0-9]*[sd]|<[^>]+>", message.id):
            if len(piece.strip()) >= 12:
                pieces.append(piece.strip())
    return pieces


@pytest.fixture
def strict_ctx(app):
    app.jinja_env.undefined = StrictUndefined  # a missing variable fails the render
    app.config.update(CUTOVER_DATE=(utcnow() + timedelta(days=20)).date(),
                      LOGO_URL="https://cdn.example.test/logo.png")
    with app.app_context():
        yield app


def make_email(kind: str, step: str | None, locale: str) -> Email:
    customer = Customer(legacy_id=f"ACME-{kind}-{step or 1}-{locale}", email="ada@example.com",
                        name="Ada", locale=locale, status="needs_update", card_brand="visa",
                        card_last4="4242", card_exp_month=1, card_exp_year=2031)
    db.session.add(customer)
    db.session.flush()
    link = Link(public_id=f"p-{customer.id}", customer_id=customer.id, created_at=utcnow(),
                expires_at=utcnow() + timedelta(days=14))
    pm = SavedPaymentMethod(customer_id=customer.id, stripe_payment_method_id=f"pm_{customer.id}",
                            setup_intent_id=f"seti_{customer.id}", brand="mastercard",
                            last4="4444", recorded_via="browser", created_at=utcnow())
    db.session.add_all([link, pm])
    db.session.flush()
    return Email(customer=customer, link=None if kind == "confirmation" else link, kind=kind,
                 step=step, payment_method_id=pm.id, to_address=customer.email,
                 created_at=utcnow())


@pytest.mark.parametrize("kind,step", KINDS)
@pytest.mark.parametrize("locale", shipped_locales())
def test_every_email_renders_in_every_shipped_language(strict_ctx, kind, step, locale):
    email = make_email(kind, step, locale)
    url = "https://cards.example.test/u/TOKEN"
    subject, text, body = compose(email, None if kind == "confirmation" else url,
                                  first_sent=utcnow() - timedelta(days=3))
    assert f'<html lang="{locale}">' in body
    visible = html.unescape(re.sub(r"<[^>]+>", " ", body))
    for part in (subject, text, visible):
        assert "None" not in part
    for part in (text, visible):
        assert "Ada" in part and email.customer.legacy_id in part
        assert "support@example.com" in part
        assert ("4444" if kind == "confirmation" else "4242") in part
    if kind != "confirmation":
        assert url in text and url in body
    if locale != "en":
        left = [p for p in english_fragments(locale) if p in text or p in visible or p in subject]
        assert left == [], f"English left in the {locale} {kind} email"
        # Text written outside {% trans %} never reaches a catalogue: compare with English.
        _, english, _ = compose(make_email(kind, step, "en"), url,
                                first_sent=utcnow() - timedelta(days=3))
        data = ("https://", "ACME-", "@example.com")
        same = [line for line in english.splitlines() if len(line) > 15
                and not any(d in line for d in data) and line in text]
        assert same == [], f"untranslatable English in the {kind} templates"
