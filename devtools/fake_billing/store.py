"""The fake's own objects, in memory only (not in localstripe's pickled store: a bulk run of
thousands must not re-pickle the store on every write)."""

from __future__ import annotations

PRICES: dict[str, dict] = {}
SCHEDULES: dict[str, dict] = {}
