"""Run localstripe (the stateful fake Stripe from PyPI) with the one behaviour cardbridge needs
that it lacks: a subscription's own `default_payment_method`, which real Stripe bills from
before the customer's default.

    python -m devtools.localstripe_server --port 8420 --from-scratch
"""

from __future__ import annotations

from localstripe import resources, server
from localstripe.errors import UserError


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
    _add_subscription_default_payment_method()
    server.start()


if __name__ == "__main__":
    main()
