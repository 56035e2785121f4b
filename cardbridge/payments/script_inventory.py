"""The payment page's script inventory (docs/payment-page-scripts.md) and the check of a page
against it: the browser test and `flask check-payment-page` both use these."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

INVENTORY = Path(__file__).resolve().parents[2] / "docs" / "payment-page-scripts.md"
STRIPE_ORIGINS = ("https://js.stripe.com", "https://*.js.stripe.com")
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


@dataclass(frozen=True)
class Inventory:
    scripts: dict[str, list[tuple[str, str]]]  # card form → [(kind, script)]
    csp: dict[str, list[str]]  # directive → sources


def load_inventory(path: Path = INVENTORY) -> Inventory:
    blocks = {name: body for name, body in _BLOCK.findall(path.read_text(encoding="utf-8"))}
    scripts: dict[str, list[tuple[str, str]]] = {}
    for line in blocks["inventory"].splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            form, kind, script = line.split()
            scripts.setdefault(form, []).append((kind, script))
    csp = {}
    for line in blocks["csp"].splitlines():
        if line.strip():
            directive, *sources = line.split()
            csp[directive] = sources
    return Inventory(scripts, csp)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def allowed_scripts(inventory: Inventory, form: str, stripe_js_url: str,
                    page_url: str) -> set[str]:
    """The absolute URLs (query strings dropped) the page may load for `form`."""
    own = _origin(page_url)
    allowed = set()
    for kind, script in inventory.scripts.get(form, []):
        if kind == "stripe":
            allowed.add(_plain(stripe_js_url if script == "STRIPE_JS_URL" else script))
        else:
            allowed.add(_plain(own + script))
    return allowed


def _plain(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def script_differences(inventory: Inventory, form: str, loaded: list[str], inline: int,
                       stripe_js_url: str, page_url: str) -> list[str]:
    """What the page loads that the inventory does not list, and what it lists but the page
    does not load."""
    allowed = allowed_scripts(inventory, form, stripe_js_url, page_url)
    seen = {_plain(url) for url in loaded}
    problems = [f"script not in the inventory: {url}" for url in sorted(seen - allowed)]
    problems += [f"inventoried script not loaded: {url}" for url in sorted(allowed - seen)]
    if inline:
        problems.append(f"{inline} inline script(s): the inventory allows none")
    return problems


def csp_differences(inventory: Inventory, header: str, stripe_js_url: str) -> list[str]:
    """Directives of the page's CSP that differ from the inventory's."""
    actual = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            actual[words[0]] = words[1:]
    offline = _origin(stripe_js_url)
    problems = []
    for directive, sources in inventory.csp.items():
        expected = []
        for source in sources:
            if source == "STRIPE_OFFLINE":
                if "stripe.com" not in offline:
                    expected.append(offline)
            else:
                expected.append(source)
        got = actual.get(directive)
        if got is None:
            problems.append(f"CSP has no {directive}")
            continue
        normalised = ["'nonce-*'" if s.startswith("'nonce-") else s for s in got]
        if sorted(normalised) != sorted(expected):
            problems.append(f"CSP {directive} is {' '.join(normalised)!r}, the inventory says "
                            f"{' '.join(expected)!r}")
    return problems


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.inline = 0
        self.form: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.sources.append(attributes["src"])
            else:
                self.inline += 1
        if attributes.get("data-form") and self.form is None:
            self.form = attributes["data-form"]


def page_scripts(html: str) -> tuple[list[str], int, str | None]:
    """(script srcs, number of inline scripts, the card form the page says it shows)."""
    parser = _Scripts()
    parser.feed(html)
    return parser.sources, parser.inline, parser.form
