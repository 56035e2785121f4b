"""create_app and configuration (the probes: tests/ops/test_probes.py)."""

from __future__ import annotations

import re

import pytest

from cardbridge.config import TUNING_INTS, ConfigError, load_config


def test_production_refuses_to_start_without_secret_key(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config(tmp_path, {"STRIPE_SECRET_KEY": "sk_live_x", "STRIPE_PUBLISHABLE_KEY": "pk"})


def test_production_refuses_to_start_without_stripe_keys(tmp_path):
    with pytest.raises(ConfigError, match="STRIPE_SECRET_KEY"):
        load_config(tmp_path, {"SECRET_KEY": "s"})


def test_development_generates_a_secret_key_once(tmp_path):
    first = load_config(tmp_path, {"CARDBRIDGE_ENV": "development"})["SECRET_KEY"]
    second = load_config(tmp_path, {"CARDBRIDGE_ENV": "development"})["SECRET_KEY"]
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_link_keys_default_to_secret_key_and_keep_their_order(tmp_path):
    env = {"CARDBRIDGE_ENV": "development", "SECRET_KEY": "s"}
    assert load_config(tmp_path, env)["LINK_SECRET_KEYS"] == ["s"]
    env["LINK_SECRET_KEYS"] = "old, new"
    assert load_config(tmp_path, env)["LINK_SECRET_KEYS"] == ["old", "new"]


@pytest.mark.parametrize("name,value", [("CARD_FORM", "iframe"), ("LINK_MAX_AGE_DAYS", "x"),
                                        ("CUTOVER_DATE", "31/12/2026"),
                                        ("PUBLIC_BASE_URL", "cards.example.com")])
def test_bad_settings_fail_fast_with_their_name(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        load_config(tmp_path, {"CARDBRIDGE_ENV": "development", name: value})


def test_static_urls_carry_a_content_hash(app):
    with app.test_request_context():
        url = app.jinja_env.globals["static_url"]("css/app.css")
    assert url.startswith("/static/css/app.css?v=") and len(url.split("v=")[1]) == 10
    response = app.test_client().get(url)
    response.close()
    assert response.status_code == 200


def test_sqlite_connections_are_not_pinged_but_server_ones_are(tmp_path):
    from cardbridge.config import derive

    config = load_config(tmp_path, {"CARDBRIDGE_ENV": "development"})
    derive(config)
    assert config["SQLALCHEMY_ENGINE_OPTIONS"] == {"hide_parameters": True}
    config = load_config(tmp_path, {"CARDBRIDGE_ENV": "development",
                                    "DATABASE_URL": "postgresql+psycopg://db/x",
                                    "DATABASE_POOL_SIZE": "24", "DATABASE_MAX_OVERFLOW": "0"})
    derive(config)
    assert config["SQLALCHEMY_ENGINE_OPTIONS"] == {
        "pool_pre_ping": True, "hide_parameters": True, "pool_size": 24, "max_overflow": 0,
        "pool_timeout": 10, "connect_args": {"connect_timeout": 5}}


@pytest.mark.parametrize("name", TUNING_INTS)
def test_every_tuning_knob_is_read_from_the_environment(tmp_path, name):
    config = load_config(tmp_path, {"CARDBRIDGE_ENV": "development", name: "7"})
    assert config[name] == 7
    assert name not in load_config(tmp_path, {"CARDBRIDGE_ENV": "development"})


def test_an_app_without_rate_limits_does_not_switch_them_off_for_the_next(app, make_app):
    # make_app, not create_app: its engines are disposed, so no connection is left to the GC
    make_app(RATELIMIT_ENABLED=False)
    limited = make_app(FRESH_LINK_RATE_LIMIT="1 per minute")
    client = limited.test_client()
    from tests.testlib import csrf_from

    statuses = []
    for _ in range(2):
        csrf = csrf_from(client.get("/u/not.a-real.token").get_data(as_text=True))
        statuses.append(client.post("/u/fresh", data={"csrf_token": csrf,
                                                       "email": "x@example.com"}).status_code)
    assert statuses == [200, 429]


# -- error pages in the customer's language -------------------------------------------------------
FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}


def test_error_pages_speak_the_browsers_language(client):
    page = client.get("/no/such/page", headers=FRENCH)
    html = page.get_data(as_text=True)
    assert page.status_code == 404 and '<html lang="fr"' in html
    assert "Page introuvable" in html and "Vérifiez le lien reçu par e-mail" in html
    english = client.get("/no/such/page").get_data(as_text=True)
    assert "Page not found" in english and '<html lang="en"' in english


def test_a_refused_form_and_a_rate_limit_are_explained_in_french(client):
    refused = client.post("/u/fresh", data={"email": "ada@example.com"}, headers=FRENCH)
    assert refused.status_code == 400
    assert "Votre session a expiré" in refused.get_data(as_text=True)
    page = client.get("/u/expired.token.here", headers=FRENCH).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answers = [client.post("/u/fresh", headers=FRENCH,
                           data={"email": f"p{i}@example.com", "csrf_token": token})
               for i in range(6)]  # FRESH_LINK_RATE_LIMIT: 5 an hour from one address
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert "Trop de tentatives" in answers[-1].get_data(as_text=True)


def test_the_console_and_the_api_keep_their_english(client):
    console = client.get("/support/no-such-page", headers=FRENCH)
    assert console.status_code == 404
    assert "Page not found" in console.get_data(as_text=True)
    api = client.get("/api/v1/no-such-thing", headers=FRENCH)
    assert api.status_code == 404 and api.get_json()["error"] == "not_found"
