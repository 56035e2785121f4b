"""Accessibility of the customer pages in chromium: axe-core finds nothing serious, the update
page fits a phone, and the keyboard reaches the card and the Save button in order."""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    BrowserLog,
    assert_page_clean,
    fill_card,
    make_link,
    open_page,
    shoot,
    watched_page,
)

pytestmark = [pytest.mark.e2e, pytest.mark.localstripe]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
AXE = Axe()


def serious_violations(page: Page) -> list[str]:
    results = AXE.run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def check_page(page: Page, name: str) -> None:
    """axe at desktop and phone widths, a screenshot of each, and no sideways scrolling."""
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        assert serious_violations(page) == [], f"{name} at {label}"
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at {label}"
        shoot(page, f"a11y-{name}-{label}")
    page.set_viewport_size(DESKTOP)


def test_update_page_and_done_page_pass_axe_at_desktop_and_phone(page, browser_log, card_app):
    link = make_link(card_app)
    open_page(page, link.url)
    check_page(page, "update")
    fill_card(page, "4242424242424242")
    page.locator("#submit").click()
    page.wait_for_url("**/u/done")
    check_page(page, "done")
    assert_page_clean(page, browser_log)


def test_invalid_link_page_passes_axe_at_desktop_and_phone(page, browser_log, card_app):
    link = make_link(card_app)
    assert page.goto(link.url[:-3] + "xyz").status == 404
    check_page(page, "invalid")
    assert_page_clean(page, browser_log, "404")


def test_update_page_has_no_horizontal_scroll_on_a_phone(browser, card_app):
    link = make_link(card_app)
    log = BrowserLog()
    phone = watched_page(browser, log, viewport=PHONE, device_scale_factor=2, is_mobile=True,
                         has_touch=True)
    try:
        open_page(phone, link.url)
        widths = phone.evaluate("""() => ({doc: document.documentElement.scrollWidth,
                                          body: document.body.scrollWidth,
                                          view: window.innerWidth})""")
        assert widths["doc"] <= widths["view"] and widths["body"] <= widths["view"], widths
        button = phone.locator("#submit").bounding_box()
        assert button["x"] >= 0 and button["x"] + button["width"] <= PHONE["width"]
        assert button["height"] >= 44  # a comfortable touch target
        shoot(phone, "update-phone-device")
        assert_page_clean(phone, log)
    finally:
        phone.context.close()


def focused(page: Page) -> str:
    return page.evaluate("""() => { const el = document.activeElement;
        return el.id || el.getAttribute("placeholder") || el.className || el.tagName; }""")


def test_keyboard_reaches_the_card_inputs_then_save_in_order(page, card_app):
    link = make_link(card_app)
    open_page(page, link.url)
    order = []
    for _ in range(10):
        page.keyboard.press("Tab")
        order.append(focused(page))
        if order[-1] == "submit":
            break
    assert order == ["skip-link", "number", "exp_month", "exp_year", "cvc", "postal_code",
                     "submit"]
    expect(page.locator("#submit")).to_be_focused()


def test_skip_link_moves_focus_to_the_main_content(page, card_app):
    link = make_link(card_app)
    open_page(page, link.url)
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    expect(page.locator(".skip-link")).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def test_the_axe_check_does_flag_a_serious_problem(page, card_app):
    """Guards the axe checks above against passing because axe never ran."""
    link = make_link(card_app)
    open_page(page, link.url)
    page.evaluate("""() => { const img = document.createElement("img");
                             img.src = "/static/css/app.css"; document.body.appendChild(img); }""")
    assert any(v.startswith("image-alt (critical)") for v in serious_violations(page))


def test_a_french_customer_saves_a_card_in_french(page, browser_log, card_app):
    """The whole path in French: page, busy state, done page; axe and screenshots as in English."""
    link = make_link(card_app, locale="fr")
    open_page(page, link.url)
    expect(page.get_by_role("heading", name="Mettez à jour votre carte")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    check_page(page, "update-fr")
    fill_card(page, "4242424242424242")
    page.get_by_role("button", name="Enregistrer la carte").click()
    page.wait_for_url("**/u/done")
    expect(page.get_by_role("heading", name="Merci, votre carte est enregistrée")).to_be_visible()
    check_page(page, "done-fr")
    assert_page_clean(page, browser_log)


def test_a_french_browser_gets_the_dead_link_page_in_french(browser, card_app):
    link = make_link(card_app)
    log = BrowserLog()
    french = watched_page(browser, log, locale="fr-FR")
    try:
        assert french.goto(link.url[:-3] + "xyz").status == 404
        expect(french.get_by_role("heading", name="Nous ne pouvons pas ouvrir ce lien")) \
            .to_be_visible()
        expect(french.get_by_label("Adresse e-mail enregistrée chez nous")).to_be_visible()
        check_page(french, "invalid-fr")
        assert_page_clean(french, log, "404")
    finally:
        french.context.close()
