"""One sender for every email: paired .txt/.html templates handed to SMTP or the .eml outbox.

Without MAIL_SERVER each message is written to instance/outbox/<time>-<id>.eml, so a machine
with no mail server still shows exactly what would have gone out.
"""

from __future__ import annotations

import os
import smtplib
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from flask import current_app, render_template


def compose(to: str, template: str, subject: str, **context) -> EmailMessage:
    context.setdefault("company", current_app.config["COMPANY_NAME"])
    context.setdefault("support_email", current_app.config["SUPPORT_EMAIL"])
    context.setdefault("brand_color", current_app.config["BRAND_COLOR"])
    context.setdefault("logo_url", current_app.config["LOGO_URL"])
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    msg["To"] = to
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="cardbridge.local")
    msg.set_content(render_template(f"email/{template}.txt", **context))
    msg.add_alternative(render_template(f"email/{template}.html", **context), subtype="html")
    return msg


def deliver(msg: EmailMessage) -> str:
    """Send one message; returns where it went (the .eml path or the Message-ID)."""
    cfg = current_app.config
    if not cfg.get("MAIL_SERVER"):
        outbox = Path(current_app.instance_path) / "outbox"
        outbox.mkdir(parents=True, exist_ok=True)
        path = outbox / f"{msg['Date'].replace(' ', '_').replace(',', '')}-{uuid.uuid4().hex}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(msg))
        os.replace(tmp, path)  # never a half-written .eml
        return str(path)
    smtp_cls = smtplib.SMTP_SSL if cfg.get("MAIL_USE_SSL") else smtplib.SMTP
    with smtp_cls(cfg["MAIL_SERVER"], cfg["MAIL_PORT"], timeout=30) as smtp:
        if cfg.get("MAIL_USE_TLS"):
            smtp.starttls()
        if cfg.get("MAIL_USERNAME"):
            smtp.login(cfg["MAIL_USERNAME"], cfg["MAIL_PASSWORD"] or "")
        smtp.send_message(msg)
    return msg["Message-ID"]


def send_email(to: str, template: str, subject: str, **context) -> str:
    return deliver(compose(to, template, subject, **context))
