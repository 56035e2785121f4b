"""`flask check-payment-page URL`: the live payment page against its script inventory
(docs/payment-page-scripts.md; PCI DSS 11.6.1), for an operator's daily cron."""

from __future__ import annotations

import click
import requests
from flask import current_app
from flask.cli import with_appcontext

from cardbridge.payments import script_inventory as payment_page


@click.command("check-payment-page")
@with_appcontext
@click.argument("url")
@click.option("--form", "card_form", default=None,
              help="card form the page should show (default: the page says, else CARD_FORM)")
def check_payment_page(url: str, card_form: str | None) -> None:
    """Fetch URL (a customer's update page) and report scripts and CSP that differ from the
    inventory; exit 1 when anything differs."""
    try:
        response = requests.get(url, timeout=20, allow_redirects=False)
    except requests.RequestException as exc:
        raise click.ClickException(f"could not fetch {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise click.ClickException(f"{url} answered {response.status_code}, not the payment "
                                   "page (is the link still live?)")
    inventory = payment_page.load_inventory()
    sources, inline, shown = payment_page.page_scripts(response.text)
    form = card_form or shown or current_app.config["CARD_FORM"]
    stripe_js = current_app.config["STRIPE_JS_URL"]
    absolute = [requests.compat.urljoin(url, src) for src in sources]
    problems = payment_page.script_differences(inventory, form, absolute, inline, stripe_js,
                                               url)
    problems += payment_page.csp_differences(
        inventory, response.headers.get("Content-Security-Policy", ""), stripe_js)
    if problems:
        for problem in problems:
            click.echo(f"DIFFERS: {problem}")
        raise SystemExit(1)
    click.echo(f"ok: {len(absolute)} scripts and the CSP match the inventory ({form})")
