"""One Stripe rate budget shared by every process: STRIPE_WRITE_RATE writes and STRIPE_READ_RATE
reads a second (Stripe counts them apart), for the bulk work of moving subscriptions.

The generic cell rate algorithm: one number per kind, the theoretical arrival time (TAT) of the
next request. Taking a slot moves it on by 1/rate and tells the caller how long to wait for the
slot it got, so any number of threads and processes together keep to the rate, evenly spaced.
The number lives in Redis when REDIS_URL is set (one atomic script, Redis's own clock), else in
a database row changed by compare-and-swap in its own short transaction (no Redis needed, any
number of machines; about one write per slot).
"""

from __future__ import annotations

import time

import redis
from flask import current_app
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from cardbridge.extensions import db
from cardbridge.models import SendBucket
from cardbridge.models.types import utcnow

RATES = {"write": "STRIPE_WRITE_RATE", "read": "STRIPE_READ_RATE"}
_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
redis.call('SET', KEYS[1], string.format('%.6f', slot + tonumber(ARGV[1])), 'EX', 3600)
return string.format('%.6f', slot - now)
"""


class Budget:
    """`take(kind)` blocks until this process may send one more request of that kind."""

    def __init__(self, rates: dict[str, float], redis_url: str | None, engine=None,
                 sleep=time.sleep):
        self.rates = rates
        self.sleep = sleep
        self.engine = engine
        self._redis = redis.Redis.from_url(redis_url) if redis_url else None
        self._script = self._redis.register_script(_TAKE) if self._redis else None

    @classmethod
    def from_config(cls, **kwargs) -> Budget:
        config = current_app.config
        return cls({kind: float(config[name]) for kind, name in RATES.items()},
                   config.get("REDIS_URL"), db.engine, **kwargs)

    def take(self, kind: str = "write") -> float:
        """Wait for the next slot of `kind`; returns the seconds waited."""
        rate = self.rates.get(kind) or 0
        if rate <= 0:
            return 0.0
        wait = self._reserve(kind, 1.0 / rate)
        if wait > 0:
            self.sleep(wait)
        return wait

    def _reserve(self, kind: str, interval: float) -> float:
        if self._script is not None:
            return float(self._script(keys=[f"cardbridge:stripe-budget:{kind}"],
                                      args=[f"{interval:.6f}"]))
        return self._reserve_in_database(f"stripe-{kind}", interval)

    def _reserve_in_database(self, name: str, interval: float) -> float:
        table = SendBucket.__table__
        for _ in range(200):  # compare-and-swap: another taker may move it first
            with self.engine.begin() as conn:
                seen = conn.execute(select(table.c.next_free_at)
                                    .where(table.c.name == name)).scalar()
                if seen is not None:
                    now = time.time()
                    slot = max(seen, now)
                    moved = conn.execute(
                        update(table).where(table.c.name == name, table.c.next_free_at == seen)
                        .values(next_free_at=slot + interval, updated_at=utcnow())).rowcount
            if seen is None:
                self._create(name)
            elif moved:
                return slot - now
        raise RuntimeError("could not take a Stripe budget slot: the budget row is contended")

    def _create(self, name: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(SendBucket.__table__).values(
                    name=name, next_free_at=0.0, updated_at=utcnow()))
        except IntegrityError:
            pass  # another taker made it first
