"""`--latency-ms M` (every /v1 answer waits M ms; asyncio, so concurrent requests overlap as on
the real API) and `--rate-limit N` (at most N reads and N writes a second, counted apart in
one-second windows; past that a 429 in Stripe's error shape with `Stripe-Rate-Limited-Reason`)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web


def latency_middleware(milliseconds: int):
    @web.middleware
    async def latency(request: web.Request, handler):
        if request.path.startswith("/v1/"):
            await asyncio.sleep(milliseconds / 1000)
        return await handler(request)

    return latency


def rate_limit_middleware(per_second: int):
    windows: dict[str, list] = {"read": [0, 0], "write": [0, 0]}  # kind → [second, count]

    @web.middleware
    async def rate_limit(request: web.Request, handler):
        if request.path.startswith("/v1/"):
            window = windows["read" if request.method == "GET" else "write"]
            second = int(time.monotonic())
            if window[0] != second:
                window[0], window[1] = second, 0
            window[1] += 1
            if window[1] > per_second:
                return web.json_response(
                    {"error": {"type": "invalid_request_error", "code": "rate_limit",
                               "message": "Request rate limit exceeded. Learn more about rate "
                                          "limits here https://stripe.com/docs/rate-limits."}},
                    status=429, headers={"Stripe-Rate-Limited-Reason": "global-rate"})
        return await handler(request)

    return rate_limit


