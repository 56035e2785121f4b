"""The customer's pages speak the customer's language: theirs if the link says whose it is, else
the browser's; the messages the page's script shows, and Stripe's own form, follow."""

from __future__ import annotations

import re

import pytest

from tests.blueprints.test_customer_page import link_for
from tests.testlib import csrf_from


@pytest.fixture
def french(make_app, fault, make_customer):
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="card_element")
    customer = make_customer(locale="fr-CA", card_brand="visa", card_last4="4242",
                             card_exp_month=1, card_exp_year=2025, name="Ada Lovelace")
    token, _ = link_for(app, customer.id)
    return app, token


def test_a_french_customer_gets_the_page_in_french(french):
    app, token = french
    html = app.test_client().get(f"/u/{token}").get_data(as_text=True)
    assert '<html lang="fr">' in html
    assert "Mettez à jour votre carte" in html and "Bonjour Ada Lovelace" in html
    assert "Visa se terminant par 4242, expire en 01/2025" in html
    assert "Enregistrer la carte" in html and "Aller au contenu" in html
    assert 'data-locale="fr"' in html  # Stripe.js draws its own form in French too
    assert 'data-msg-saving="Enregistrement de votre carte…"' in html
    # The deadline as a French reader writes it, not "8 December 2026".
    deadline = re.search(r"À mettre à jour avant le</dt><dd>([^<]+)</dd>", html).group(1)
    assert re.fullmatch(r"\d{1,2} (janvier|février|mars|avril|mai|juin|juillet|août|septembre|"
                        r"octobre|novembre|décembre) \d{4}", deadline), deadline
    assert "Update your card" not in html


def test_the_customer_locale_wins_over_the_browser(french):
    app, token = french
    html = app.test_client().get(f"/u/{token}", headers={"Accept-Language": "en-US"}) \
        .get_data(as_text=True)
    assert '<html lang="fr">' in html


def test_a_customer_without_a_locale_gets_english(watched_en):
    app, token = watched_en
    html = app.test_client().get(f"/u/{token}", headers={"Accept-Language": "de"}) \
        .get_data(as_text=True)
    assert '<html lang="en">' in html and "Update your card" in html


@pytest.fixture
def watched_en(make_app, fault, make_customer):
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="card_element")
    token, _ = link_for(app, make_customer().id)
    return app, token


@pytest.mark.parametrize("header, lang, heading", [
    ("fr-CA,fr;q=0.9,en;q=0.5", "fr", "Nous ne pouvons pas ouvrir ce lien"),
    ("de-DE,en;q=0.5", "en", "We can't open this link"),
    (None, "en", "We can't open this link"),
])
def test_a_link_we_cannot_read_answers_in_the_browsers_language(client, header, lang, heading):
    headers = {"Accept-Language": header} if header else {}
    response = client.get("/u/not.a-real.token", headers=headers)
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert f'<html lang="{lang}">' in html and heading in html


def test_messages_for_the_pages_script_are_in_the_customers_language(french, fault):
    app, token = french
    client = app.test_client()
    csrf = csrf_from(client.get(f"/u/{token}").get_data(as_text=True))
    response = client.post(f"/u/{token}/complete", json={}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 400
    assert response.get_json()["message"] == "Référence d’enregistrement manquante."
    fault.default = (503, {}, {"error": {"type": "api_error", "message": "down"}}, 0.0)
    response = client.post(f"/u/{token}/intent", json={}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 503
    assert response.get_json()["message"].startswith("Nous n’avons pas pu joindre")


def _used_link_page(app, make_customer, locale):
    from datetime import UTC, datetime

    from cardbridge.extensions import db
    from cardbridge.links.service import find_link
    from cardbridge.models import Link

    token, public_id = link_for(app, make_customer(locale=locale).id)
    with app.app_context():
        link: Link = find_link(public_id)
        link.used_at = datetime.now(UTC)
        db.session.commit()
    return app.test_client().get(f"/u/{token}").get_data(as_text=True)


def test_french_then_english_then_french_in_one_process_each_in_their_own_language(
        make_app, fault, make_customer):
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="card_element")
    client = app.test_client()
    fr_token, _ = link_for(app, make_customer(locale="fr").id)
    en_token, _ = link_for(app, make_customer(locale="en").id)
    for _ in range(2):
        assert "Mettez à jour votre carte" in client.get(f"/u/{fr_token}").get_data(as_text=True)
        english = client.get(f"/u/{en_token}").get_data(as_text=True)
        assert "Update your card" in english and "Mettez" not in english
    assert "Ce lien a déjà été utilisé" in _used_link_page(app, make_customer, "fr")
    english_used = _used_link_page(app, make_customer, "en")
    assert "This link has already been used" in english_used
    assert "déjà" not in english_used
    french_404 = client.get("/nowhere", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    english_404 = client.get("/nowhere", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert '<html lang="fr">' in french_404 and '<html lang="en">' in english_404
    assert "Page not found" in english_404 and "Page not found" not in french_404


def test_emails_in_french_then_english_each_in_their_own_language(app):
    from cardbridge.email.mailer import render

    with app.app_context():
        # Each round a new shape of email (rendered afresh, not from an earlier render).
        for fields in ({"name": "Ada"}, {}, {"card": "Visa 4242"}):
            fr_text, _ = render("confirmation", "fr", **fields)
            en_text, _ = render("confirmation", "en", **fields)
            assert "carte" in fr_text.lower() and "carte" not in en_text.lower(), fields
            assert "card" in en_text.lower()


def test_two_threads_rendering_two_languages_at_once_never_mix(make_app, fault, make_customer):
    import threading

    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="card_element")
    tokens = {"fr": link_for(app, make_customer(locale="fr").id)[0],
              "en": link_for(app, make_customer(locale="en").id)[0]}
    wrong = []

    def read(code: str, expected: str, unexpected: str) -> None:
        client = app.test_client()
        for _ in range(25):
            html = client.get(f"/u/{tokens[code]}").get_data(as_text=True)
            if expected not in html or unexpected in html:
                wrong.append(code)

    threads = [threading.Thread(target=read, args=("fr", "Mettez à jour", "Update your card")),
               threading.Thread(target=read, args=("en", "Update your card", "Mettez à jour"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
