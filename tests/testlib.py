"""Plain helpers and constants for tests (import these; never import a conftest module)."""

from __future__ import annotations

import re
import socket

WEBHOOK_SECRET = "whsec_test_cardbridge"
PUBLIC_BASE_URL = "https://cards.example.test"
_CSRF_RE = re.compile(r'name="csrf[-_]token"(?: content| value)="([^"]+)"')


def csrf_from(html: str) -> str:
    """The CSRF token a page carries (meta tag or hidden field)."""
    match = _CSRF_RE.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
