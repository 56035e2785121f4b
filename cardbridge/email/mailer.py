"""One sender for every email: paired templates rendered and CSS-inlined, handed to a transport.

Messages are built with the email package's MIME classes. Two transports with one interface:
SMTP through smtplib (one connection reused for a whole batch) when MAIL_SERVER is set, and
`.eml` files under instance/outbox/ when it is not, so a machine with no mail server still
shows exactly what would have gone out.

SMTP failures are sorted by what they mean for the row that was being sent:
`Retry` (not delivered, try again later), `Refused` (not delivered and never will be),
`ConnectionLost` (not delivered; the rest of the batch should wait too) and `MaybeDelivered`
(the connection broke after the message body was handed over: the server may have it).
"""

from __future__ import annotations

import os
import re
import smtplib
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formataddr, formatdate, getaddresses, make_msgid, parseaddr
from functools import lru_cache
from pathlib import Path

import css_inline
from babel import Locale
from babel.dates import format_date
from babel.support import NullTranslations
from flask import current_app
from flask_babel import force_locale, get_translations
from jinja2 import Environment

DEFAULT_LOCALE = "en"
# The MIME classes' own policy, with the CRLF line ends the wire wants. (Serialising them
# with an EmailPolicy would parse every header again: what building with them avoids.)
SMTP_POLICY = compat32.clone(linesep="\r\n")
SMTP_7BIT = SMTP_POLICY.clone(cte_type="7bit")
_TRANSLATIONS = Path(__file__).resolve().parents[2] / "translations"  # beside app.py
# How servers name what they accepted: Postfix "queued as X", others "id=X", SES "Ok X".
_QUEUE_IDS = [re.compile(p, re.IGNORECASE) for p in (
    r"queued as\s+<?([\w.@\-]{4,200})",
    r"\bid=<?([\w.@\-]{4,200})",
    r"\bOk:?\s+<?([\w.@\-]{6,200})",
)]


class DeliveryError(Exception):
    """A message did not (certainly) reach the SMTP server; subclasses say what to do."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class Retry(DeliveryError):
    """Not delivered; a later attempt may work (4xx, or the server is busy)."""


class Refused(DeliveryError):
    """Not delivered and never will be (5xx). `bounce` when the mailbox itself was refused."""

    def __init__(self, message: str, code: int | None = None, *, bounce: bool = False):
        super().__init__(message, code)
        self.bounce = bounce


class ConnectionLost(Retry):
    """No connection (or it dropped before the message body): retry this and the rest later."""


class MaybeDelivered(DeliveryError):
    """The connection broke after the body was sent: the server may have accepted it."""


# -- rendering -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def shipped_locales() -> tuple[str, ...]:
    """English (the templates' own language) and every language with a compiled catalogue."""
    found = sorted(p.parent.parent.name for p in _TRANSLATIONS.glob("*/LC_MESSAGES/messages.mo"))
    return (DEFAULT_LOCALE, *[code for code in found if code != DEFAULT_LOCALE])


def pick_locale(value: str | None) -> str:
    """The shipped language for a customer's `locale` ("fr", "fr-CA", "FR_fr" → "fr")."""
    language = (value or "").strip().replace("-", "_").split("_")[0].lower()
    return language if language in shipped_locales() else DEFAULT_LOCALE


@lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    # Mail clients drop <style> blocks; everything the templates style ends up in style="".
    return css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


@dataclass(frozen=True)
class Language:
    """One shipped language: Flask-Babel's catalogue for it, installed in its own overlay of
    the app's Jinja environment, so rendering thousands of emails in a worker costs no
    per-string locale lookups (and no request or forced-locale context is needed)."""

    code: str
    env: Environment
    translations: NullTranslations
    locale: Locale

    def gettext(self, message: str, **variables) -> str:
        text = self.translations.ugettext(message)
        return text % variables if variables else text

    def day(self, value: date | datetime) -> str:
        return _long_date(self.locale, value.date() if isinstance(value, datetime) else value)


@lru_cache(maxsize=1024)
def _long_date(locale: Locale, day: date) -> str:
    return format_date(day, format="long", locale=locale)  # the same few days, over and over


def language(code: str) -> Language:
    """The Language for a shipped code (see pick_locale), built once per app."""
    cache = current_app.extensions.setdefault("email_languages", {})
    found = cache.get(code)
    if found is None:
        with force_locale(code):
            translations = get_translations()  # Flask-Babel's loader and directories
        found = cache[code] = Language(code, _environment(translations), translations,
                                       Locale.parse(code))
    return found


def _environment(translations: NullTranslations) -> Environment:
    """A Jinja environment of the app's own templates, filters and globals for one language.

    Not an overlay of the app's environment: an overlay shares its parent's `globals` and the
    i18n extension's installer, so installing a catalogue in one language's overlay switched
    every language (a French page, then English customers' pages in French).
    """
    base = current_app.jinja_env
    env = Environment(loader=base.loader, autoescape=base.autoescape,
                      auto_reload=base.auto_reload, extensions=["jinja2.ext.i18n"],
                      cache_size=100)
    env.globals.update(base.globals)
    env.filters.update(base.filters)
    env.tests.update(base.tests)
    env.policies.update(base.policies)  # Flask-Babel's ext.i18n.trimmed, among others
    env.install_gettext_translations(translations, newstyle=True)
    return env


def render(template: str, locale: str, **context) -> tuple[str, str]:
    """(text, html) of `templates/email/<template>.{txt,html}` in `locale`, CSS inlined."""
    cfg = current_app.config
    context.setdefault("company", cfg["COMPANY_NAME"])
    context.setdefault("support_email", cfg["SUPPORT_EMAIL"])
    context.setdefault("brand_color", cfg["BRAND_COLOR"])
    context.setdefault("logo_url", cfg["LOGO_URL"])
    context.setdefault("site", cfg["PUBLIC_BASE_URL"])
    context["lang"] = locale
    env = language(locale).env
    text = env.get_template(f"email/{template}.txt").render(context)
    html = env.get_template(f"email/{template}.html").render(context)
    return _trim_text(text), _trim_html(_inliner().inline(html))


_BLANK_RUN = re.compile(r"\n(?:[ \t]*\n){2,}")
_BLANK_LINE = re.compile(r"\n[ \t]*(?=\n)")


def _trim_text(text: str) -> str:
    """Blank lines the template tags leave: never more than one between paragraphs."""
    return _BLANK_RUN.sub("\n\n", text)


def _trim_html(html: str) -> str:
    """Whitespace-only lines the templates and the inliner leave: HTML outside <pre> (which
    the email templates do not use) renders a run of whitespace as one space either way."""
    return _BLANK_LINE.sub("", html)


def message_id_for(email_id: int | str) -> str:
    """Our Message-ID: names the outbox row, so a bounce that quotes it leads back to it."""
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    address = sender[1] if isinstance(sender, tuple) else parseaddr(sender)[1]
    domain = address.rpartition("@")[2]
    return make_msgid(idstring=f"cb{email_id}", domain=domain or "cardbridge.local")


def build(to: str, subject: str, text: str, html: str, *, message_id: str,
          headers: dict[str, str] | None = None) -> Message:
    """A text + HTML email, built with the email package's MIME classes.

    Not `EmailMessage`: its header objects (parsed and re-folded on every set and read) cost
    1.8 ms a message here, more than the SMTP exchange; the MIME classes build the same
    message in 0.15 ms (both measured in-process; docs/delivery.md, "Throughput"). A line
    break in any header value (header injection) raises ValueError."""
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    values = {"From": formataddr(sender) if isinstance(sender, tuple) else sender, "To": to,
              "Subject": subject, "Message-ID": message_id,
              "Auto-Submitted": "auto-generated", **(headers or {})}
    if any("\r" in v or "\n" in v for v in (*values, *values.values())):
        raise ValueError("a header would hold a line break")
    msg = MIMEMultipart("alternative")
    for name, value in values.items():
        msg[name] = value if value.isascii() else Header(value, "utf-8").encode()
    msg["Date"] = formatdate(usegmt=True)
    msg.attach(MIMEText(text, "plain", _charset(text)))
    msg.attach(MIMEText(html, "html", _charset(html)))
    return msg


def _charset(text: str) -> Charset | str:
    if text.isascii():
        return "us-ascii"
    charset = Charset("utf-8")
    charset.body_encoding = QP  # readable in the raw message, where base64 is not
    return charset


def _envelope(msg: Message) -> tuple[str, list[str]]:
    """MAIL FROM and RCPT TO addresses, as smtplib's send_message would take them."""
    return parseaddr(msg["From"])[1], [address for _, address in getaddresses([msg["To"]])]


def envelope_for(to: str) -> tuple[str, list[str]]:
    """The same, from what `build` was given: each read of a parsed header parses it again,
    which costs more per email than the SMTP exchange, so the worker passes these along."""
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    return (sender[1] if isinstance(sender, tuple) else parseaddr(sender)[1]), [to]


# -- transports ----------------------------------------------------------------------------------
class SmtpTransport:
    """Sends over one smtplib connection, opened on first use and reused until `close`.

    Each message goes through smtplib's own MAIL, RCPT and DATA calls (not send_message)
    only to read the server's answer to DATA, which names what it queued: that id is what a
    provider's bounce report quotes."""

    kind = "smtp"

    def __init__(self) -> None:
        self._host: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        cfg = current_app.config
        timeout = cfg.get("MAIL_TIMEOUT_SECONDS", 30)
        cls = smtplib.SMTP_SSL if cfg.get("MAIL_USE_SSL") else smtplib.SMTP
        try:
            host = cls(cfg["MAIL_SERVER"], cfg.get("MAIL_PORT") or 25, timeout=timeout)
            if cfg.get("MAIL_USE_TLS"):
                host.starttls()
            if cfg.get("MAIL_USERNAME") and cfg.get("MAIL_PASSWORD"):
                host.login(cfg["MAIL_USERNAME"], cfg["MAIL_PASSWORD"])
        except smtplib.SMTPAuthenticationError as exc:
            raise ConnectionLost(f"SMTP login refused: {exc.smtp_code}", exc.smtp_code) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectionLost(f"cannot reach the SMTP server: {_short(exc)}") from exc
        self._host = host
        return host

    def send(self, msg: Message, name: str = "", *,
             envelope: tuple[str, list[str]] | None = None) -> str:
        """Hand `msg` to the server; returns the server's id for it (or our Message-ID)."""
        host = self._host or self._connect()
        sender, recipients = envelope or _envelope(msg)
        try:
            host.ehlo_or_helo_if_needed()
            # UTF-8 parts go as they are to a server that takes 8BITMIME (RFC 6152); to any
            # other, the email package re-encodes them in 7 bits.
            eight_bit = host.has_extn("8bitmime")
            body = msg.as_bytes(policy=SMTP_POLICY if eight_bit else SMTP_7BIT)
            options = ["BODY=8BITMIME"] if eight_bit and not body.isascii() else []
            code, reply = host.mail(sender, options)
            if code != 250:
                # A refused sender is our configuration, not this email: hold the batch.
                self._reset()
                raise ConnectionLost(f"sender refused: {code} {_short(reply)}", code)
            for rcpt in recipients:
                code, reply = host.rcpt(rcpt)
                if code not in (250, 251):
                    self._reset()
                    raise _classify(code, reply, "recipient refused", bounce=True)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            raise ConnectionLost(f"connection lost before the message: {_short(exc)}") from exc
        try:
            code, reply = host.data(body)
        except smtplib.SMTPDataError as exc:  # DATA itself refused: the body never left
            self._reset()
            raise _classify(exc.smtp_code, exc.smtp_error, "DATA refused") from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            raise MaybeDelivered(f"connection lost during DATA: {_short(exc)}") from exc
        if code != 250:
            self._reset()
            raise _classify(code, reply, "message refused")
        return _provider_id(reply) or str(msg["Message-ID"])

    def _reset(self) -> None:
        try:
            self._host.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        if self._host is not None:
            try:
                self._host.quit()
            except (smtplib.SMTPException, OSError):
                self._host.close()  # the server already went away
            self._host = None


class OutboxTransport:
    """Writes each message to instance/outbox/<name>.eml; the same name overwrites, never adds."""

    kind = "outbox"

    def __init__(self) -> None:
        self.directory = Path(current_app.instance_path) / "outbox"
        self.directory.mkdir(parents=True, exist_ok=True)

    def send(self, msg: Message, name: str = "", *,
             envelope: tuple[str, list[str]] | None = None) -> str:
        name = name or f"adhoc-{uuid.uuid4().hex}"
        path = self.directory / f"{name}.eml"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(msg.as_bytes(policy=SMTP_POLICY))
        os.replace(tmp, path)  # never a half-written .eml
        return str(path)

    def close(self) -> None:
        return None


def open_transport() -> SmtpTransport | OutboxTransport:
    """The transport for this app: SMTP when MAIL_SERVER is set, else the .eml outbox."""
    return SmtpTransport() if current_app.config.get("MAIL_SERVER") else OutboxTransport()


def send_email(to: str, template: str, subject: str, *, locale: str = DEFAULT_LOCALE,
               **context) -> str:
    """Render and send one email now, with no outbox row (ad-hoc and operator mail only)."""
    text, html = render(template, locale, **context)
    msg = build(to, subject, text, html, message_id=message_id_for(uuid.uuid4().hex[:12]))
    transport = open_transport()
    try:
        return transport.send(msg)
    finally:
        transport.close()


def _classify(code: int, reply: bytes | str, what: str, *, bounce: bool = False) -> DeliveryError:
    text = f"{what}: {code} {_short(reply)}"
    if 400 <= code < 500:
        return Retry(text, code)
    return Refused(text, code, bounce=bounce and code in (550, 551, 553))


def _provider_id(reply: bytes | str) -> str | None:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    for pattern in _QUEUE_IDS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def _short(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).replace("\n", " ")[:300]
