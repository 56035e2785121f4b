"""Stripe's card account updater, on demand: the network reports a card's new expiry (and
sometimes a new number) and Stripe changes the saved PaymentMethod in place, keeping its id,
then sends `payment_method.automatically_updated`.

Stripe offers no API to cause this, so the fake adds one outside `/v1`, beside localstripe's
own `/_config/webhooks/{id}`:

    POST /_config/card_updater/{pm id}   exp_month=1 exp_year=2031 [number=4000…]

A new number changes last4 and the fingerprint (the fingerprint follows the number, as
localstripe computes it for every card); an expiry alone keeps both.
"""

from __future__ import annotations

from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError

from devtools.fake_billing import events
from devtools.fake_billing.strict import invalid, request_data

PATH = "/_config/card_updater/{id}"


async def update_card(request: web.Request) -> web.Response:
    data = await request_data(request)
    pm = resources.PaymentMethod._api_retrieve(request.match_info["id"])  # 404 if unknown
    if getattr(pm, "type", None) != "card":
        raise UserError(400, "Only cards are updated by the card updater")
    try:
        month, year = int(data["exp_month"]), int(data["exp_year"])
    except (KeyError, TypeError, ValueError):
        raise invalid("exp_month", "parameter_missing",
                      "exp_month and exp_year are needed") from None
    if not (1 <= month <= 12 and 2019 <= year < 2100):
        raise invalid("exp_year", "invalid_expiry_year", "Your card's expiry is invalid.")
    number = data.get("number")
    if number is not None:
        if not (isinstance(number, str) and len(number) == 16 and number.isdigit()):
            raise invalid("number", "invalid_number", "Your card number is invalid.")
        pm._card_number = number
        pm.card = {**pm.card, "last4": number[-4:],
                   "fingerprint": resources.fingerprint(number)}
    pm.card = {**pm.card, "exp_month": month, "exp_year": year}
    events.make("payment_method.automatically_updated", pm)
    return server.json_response(pm._export())


ROUTE = ("POST", PATH, update_card)
