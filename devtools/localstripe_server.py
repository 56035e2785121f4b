"""Run localstripe (the stateful fake Stripe from PyPI) with what cardbridge needs that it
lacks: a subscription's own `default_payment_method`, which real Stripe bills from before the
customer's default; and Prices, Subscription Schedules, latency and rate limits, checked as
strictly as Stripe, plus price subscriptions, test clocks and
invoices.pay with a card (devtools/fake_billing/).

    python -m devtools.localstripe_server --port 8420 --from-scratch [--rate-limit N]
        [--latency-ms M]

With --from-scratch the store is never pickled to disk (localstripe pickles it whole after every
write): nothing reloads it, and at thousands of objects the pickling, not the API, was the limit.
"""

from __future__ import annotations

import argparse
import sys

from localstripe import resources, server
from localstripe.errors import UserError

from devtools import fake_billing


def _add_subscription_default_payment_method() -> None:
    sub_cls = resources.Subscription
    original_init = sub_cls.__init__
    original_update = sub_cls._update

    def __init__(self, *args, default_payment_method=None, **kwargs):
        original_init(self, *args, **kwargs)
        self.default_payment_method = _checked_pm(default_payment_method)

    def _update(self, default_payment_method=None, **kwargs):
        if kwargs:
            original_update(self, **kwargs)
        if default_payment_method is not None:
            self.default_payment_method = _checked_pm(default_payment_method) or None

    def _checked_pm(value):
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not value.startswith("pm_"):
            raise UserError(400, "Bad request")
        resources.PaymentMethod._api_retrieve(value)  # 404 if it does not exist
        return value

    sub_cls.__init__ = __init__
    sub_cls._update = _update


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--rate-limit", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--from-scratch", action="store_true")
    ours, rest = parser.parse_known_args()
    _add_subscription_default_payment_method()
    fake_billing.install(server.app, latency_ms=ours.latency_ms, rate_limit=ours.rate_limit)
    if ours.from_scratch:
        # Nothing reloads the store, so it is never written: localstripe pickles the whole
        # store to one shared /tmp file on every object it sets (its middleware, and the
        # store's own __setitem__), which made each write cost more than the last (81% of the
        # fake's time under bench/load.py) and let parallel fakes overwrite one file.
        server.app.middlewares.remove(server.save_store_middleware)
        resources.store.dump_to_disk = lambda: None
    sys.argv = [sys.argv[0], *rest, *(["--from-scratch"] if ours.from_scratch else [])]
    server.start()


if __name__ == "__main__":
    main()
