"""One sender for every email: paired templates rendered and CSS-inlined, handed to a transport.

Two transports with one interface: SMTP through Flask-Mail (one connection reused for a whole
batch) when MAIL_SERVER is set, and `.eml` files under instance/outbox/ when it is not, so a
machine with no mail server still shows exactly what would have gone out.

SMTP failures are sorted by what they mean for the row that was being sent:
`Retry` (not delivered, try again later), `Refused` (not delivered and never will be),
`ConnectionLost` (not delivered; the rest of the batch should wait too) and `MaybeDelivered`
(the connection broke after the message body was handed over: the server may have it).
"""

from __future__ import annotations

import binascii
import os
import re
import smtplib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import formatdate, make_msgid
from functools import lru_cache
from pathlib import Path

import css_inline
from babel import Locale
from babel.dates import format_date
from babel.support import NullTranslations
from flask import current_app
from flask_babel import force_locale, get_translations
from flask_mail import Connection, sanitize_address, sanitize_subject
from jinja2 import Environment

DEFAULT_LOCALE = "en"
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


def _address(value: str) -> str:
    if value.isascii() and "<" not in value and '"' not in value and "," not in value:
        return value  # a bare address: nothing to encode
    return _encoded_address(value)


@lru_cache(maxsize=64)
def _encoded_address(value: str) -> str:
    return sanitize_address(value)  # encodes a display name; slow enough to remember


_BARE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _envelope(address: str) -> str:
    """`<addr>` for MAIL FROM / RCPT TO, as smtplib.quoteaddr gives it."""
    return f"<{address}>" if _BARE.fullmatch(address) else _quoted(address)


@lru_cache(maxsize=64)
def _quoted(address: str) -> str:
    return smtplib.quoteaddr(address)  # "Name <addr>" and the like: parsed once


def message_id_for(email_id: int | str) -> str:
    """Our Message-ID: names the outbox row, so a bounce that quotes it leads back to it."""
    domain = _address(current_app.config["MAIL_DEFAULT_SENDER"]).rpartition("@")[2].strip("> ")
    return make_msgid(idstring=f"cb{email_id}", domain=domain or "cardbridge.local")


@dataclass
class OutgoingMessage:
    """One text + HTML email as the transports send it (Flask-Mail's Connection carries it).

    Not Flask-Mail's Message: that one names itself with `make_msgid()`, which asks for this
    host's fully qualified name (a resolver call) for every message, only for us to replace
    the Message-ID with ours, which names the outbox row.
    """

    sender: str
    recipients: list[str]
    subject: str
    body: str
    html: str
    msgId: str  # noqa: N815 (Flask-Mail's name, which callers and logs already use)
    extra_headers: dict[str, str] = field(default_factory=dict)
    date: float | None = None  # epoch seconds; None: when it is serialised

    @property
    def send_to(self) -> list[str]:
        return list(dict.fromkeys(self.recipients))

    def has_bad_headers(self) -> bool:
        """A line break in any header value: header injection, never sent."""
        values = [self.sender, self.subject, self.msgId, *self.recipients,
                  *self.extra_headers, *self.extra_headers.values()]
        return any("\r" in v or "\n" in v for v in values)


def build(to: str, subject: str, text: str, html: str, *, message_id: str,
          headers: dict[str, str] | None = None) -> OutgoingMessage:
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    if isinstance(sender, tuple):  # Flask-Mail's ("Name", "address") form
        sender = f"{sender[0]} <{sender[1]}>"
    msg = OutgoingMessage(sender=sender, recipients=[to],
                          subject=subject, body=text, html=html, msgId=message_id,
                          extra_headers={"Auto-Submitted": "auto-generated", **(headers or {})})
    if msg.has_bad_headers():
        raise ValueError("a header would hold a line break")
    return msg


def to_bytes(msg: OutgoingMessage, *, eight_bit: bool = False) -> bytes:
    """RFC 5322 bytes of a text + HTML message, each part 7bit, 8bit (when `eight_bit`: the
    server takes 8BITMIME) or quoted-printable (_encode_body).

    The email package's generator (Flask-Mail's `as_bytes`) costs more than the SMTP
    exchange itself; this writes the one shape we send directly. The boundary starts with
    "=_", which quoted-printable text can never contain, and carries 128 random bits, which
    a 7bit or 8bit part will not contain by chance.
    """
    boundary = f"=_cb_{uuid.uuid4().hex}"
    head = [
        f"From: {_address(msg.sender)}",
        f"To: {', '.join(_address(r) for r in msg.recipients)}",
        f"Subject: {sanitize_subject(msg.subject)}",
        f"Date: {formatdate(msg.date, usegmt=True)}",
        f"Message-ID: {msg.msgId}",
        "MIME-Version: 1.0",
        *(f"{k}: {v}" for k, v in msg.extra_headers.items()),
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    parts = [("plain", msg.body), ("html", msg.html)]
    # Encoded words fold with a bare "\n": every header line ends in CRLF like the rest.
    lines = ["\r\n".join(head).replace("\r\n", "\n").replace("\n", "\r\n"), ""]
    for subtype, content in parts:
        encoding, encoded = _encode_body(content, eight_bit=eight_bit)
        lines += [f"--{boundary}", f'Content-Type: text/{subtype}; charset="utf-8"',
                  f"Content-Transfer-Encoding: {encoding}", "", encoded]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("utf-8" if eight_bit else "ascii")


_MAX_LINE = 998  # RFC 5322's limit on a line in octets, CRLF not counted


def _encode_body(text: str, *, eight_bit: bool = False) -> tuple[str, str]:
    """(Content-Transfer-Encoding, CRLF body). ASCII whose lines fit RFC 5322 goes as it is
    ("7bit"); so does any UTF-8 whose lines fit when the server takes 8BITMIME ("8bit",
    RFC 6152). Anything else is quoted-printable, whose soft breaks every 76 characters nearly
    double the lines of a paragraph-per-line HTML part (every line is work for the server)."""
    text = text.replace("\r\n", "\n")
    if "\r" not in text and "\0" not in text:
        if text.isascii():
            if max(map(len, text.split("\n"))) <= _MAX_LINE:
                return "7bit", text.replace("\n", "\r\n")
        elif eight_bit and max(len(line.encode("utf-8"))
                               for line in text.split("\n")) <= _MAX_LINE:
            return "8bit", text.replace("\n", "\r\n")
    return "quoted-printable", _qp(text)


def _qp(text: str) -> str:
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)
    return encoded.decode("ascii").replace("\n", "\r\n")


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuffed(body: bytes) -> bytes:
    """The DATA payload: lines starting with "." get another (RFC 5321 4.5.2), then the end
    marker. `body` has CRLF line ends (`to_bytes`)."""
    if body.startswith(b".") or b"\n." in body:
        body = _LEADING_DOT.sub(b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


# -- transports ----------------------------------------------------------------------------------
class _SmtpConnection(Connection):
    """Flask-Mail's connection with a socket timeout, keeping the server's reply to DATA."""

    def configure_host(self) -> smtplib.SMTP:
        timeout = current_app.config.get("MAIL_TIMEOUT_SECONDS", 30)
        cls = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = cls(self.mail.server, self.mail.port, timeout=timeout)
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host

    def __exit__(self, *exc) -> None:
        if self.host is not None:
            try:
                self.host.quit()
            except (smtplib.SMTPException, OSError):
                self.host.close()  # the server already went away; nothing to say goodbye to
            self.host = None


class SmtpTransport:
    """Sends over one SMTP connection, opened on first use and reused until `close`."""

    kind = "smtp"

    def __init__(self) -> None:
        self._conn: _SmtpConnection | None = None

    def _host(self) -> smtplib.SMTP:
        if self._conn is None or self._conn.host is None:
            conn = _SmtpConnection(current_app.extensions["mail"])
            try:
                conn.__enter__()
            except smtplib.SMTPAuthenticationError as exc:
                raise ConnectionLost(f"SMTP login refused: {exc.smtp_code}", exc.smtp_code) \
                    from exc
            except (smtplib.SMTPException, OSError) as exc:
                raise ConnectionLost(f"cannot reach the SMTP server: {_short(exc)}") from exc
            self._conn = conn
        return self._conn.host

    # The caller may give work to do while the server answers (see `send`).
    overlaps = True

    def send(self, msg: OutgoingMessage, name: str = "", *,
             before_data: Callable[[], None] | None = None,
             after_body: Callable[[], None] | None = None) -> str:
        """Hand `msg` to the server; returns the server's id for it (or our Message-ID).

        `before_data` runs once the MAIL command is written and before its reply is read: the
        server works on the command meanwhile, and nothing of this message can be delivered
        before `before_data` returns (its body goes only after). If it raises, the message is
        abandoned (RSET) and the exception propagates. `after_body` runs once the body is
        written and before the server's verdict on it is read; it must not raise.
        """
        host = self._host()
        sender = _address(msg.sender)
        recipients = [_address(r) for r in msg.send_to]
        try:
            host.ehlo_or_helo_if_needed()
            body = to_bytes(msg, eight_bit=host.has_extn("8bitmime"))
            # smtplib's mail()/rcpt(), minus its address parser per call.
            host.putcmd("mail", f"FROM:{_envelope(sender)}"
                                + ("" if body.isascii() else " BODY=8BITMIME"))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            raise ConnectionLost(f"connection lost before the message: {_short(exc)}") from exc
        if before_data is not None:
            # Outside the handler above: the caller's failure is never a lost connection.
            self._meanwhile(host, before_data)
        try:
            code, reply = host.getreply()
            if code != 250:
                # A refused sender is our configuration, not this email: hold the batch.
                self._reset(host)
                raise ConnectionLost(f"sender refused: {code} {_short(reply)}", code)
            for rcpt in recipients:
                code, reply = host.docmd("rcpt", f"TO:{_envelope(rcpt)}")
                if code not in (250, 251):
                    self._reset(host)
                    raise _classify(code, reply, "recipient refused", bounce=True)
            code, reply = host.docmd("data")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            raise ConnectionLost(f"connection lost before the message: {_short(exc)}") from exc
        if code != 354:  # DATA itself refused: the body never left
            self._reset(host)
            raise _classify(code, reply, "DATA refused")
        try:
            host.send(_dot_stuffed(body))
            if after_body is not None:
                after_body()
            code, reply = host.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            raise MaybeDelivered(f"connection lost during DATA: {_short(exc)}") from exc
        if code != 250:
            self._reset(host)
            raise _classify(code, reply, "message refused")
        return _provider_id(reply) or msg.msgId

    def _meanwhile(self, host: smtplib.SMTP, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException:
            # Read the MAIL reply the server owes us, then drop the transaction, so the
            # connection stays in step for the next message (or is closed).
            try:
                host.getreply()
            except (smtplib.SMTPException, OSError):
                self.close()
            else:
                self._reset(host)
            raise

    def _reset(self, host: smtplib.SMTP) -> None:
        try:
            host.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.__exit__(None, None, None)
            self._conn = None


class OutboxTransport:
    """Writes each message to instance/outbox/<name>.eml; the same name overwrites, never adds."""

    kind = "outbox"

    def __init__(self) -> None:
        self.directory = Path(current_app.instance_path) / "outbox"
        self.directory.mkdir(parents=True, exist_ok=True)

    def send(self, msg: OutgoingMessage, name: str = "") -> str:
        name = name or f"adhoc-{uuid.uuid4().hex}"
        path = self.directory / f"{name}.eml"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(to_bytes(msg))
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
