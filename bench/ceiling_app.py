"""The ceiling for bench/page.py: the least any Flask page can do that does the page's job.

What `GET /u/<token>` must do, whatever the code around it, and nothing else:

* verify the link's itsdangerous signature and age (issue 2 fixes the format);
* read the link's row and its customer's from the app's own database, in one indexed query,
  since only the row says whether the link is used, revoked or expired;
* give the browser a CSRF token for the page's POSTs: Flask-WTF's kind, a random value kept
  in Flask's signed session cookie and sent signed in the page;
* a fresh CSP nonce in the page and its header, and the link page's other headers;
* the customer's values HTML-escaped into a page prepared in advance.

It uses the cheapest form of each: plain sqlite3 on a connection per thread, serializers built
once with their derived keys remembered and no zlib attempt, a page skeleton filled by
str.replace, no extension, no hook. The page it serves is the real one with the same
headers and size. If this route cannot reach a ratio against the bare route, no page that
does this work can.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, session
from markupsafe import escape

from security import PlainTimedSerializer, SessionCookies
from services.links import SALT, LinkSerializer

app = Flask(__name__)
app.secret_key = os.environ["SECRET_KEY"]
app.session_interface = SessionCookies()
app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")

LINKS = LinkSerializer(json.loads(os.environ["BENCH_LINK_KEYS"]), salt=SALT)
CSRF = PlainTimedSerializer(app.secret_key, salt="wtf-csrf-token")  # Flask-WTF's token format
MAX_AGE = int(os.environ.get("BENCH_LINK_MAX_AGE", str(30 * 86400)))
SKELETON = Path(os.environ["BENCH_SKELETON"]).read_text(encoding="utf-8")
CSP = os.environ["BENCH_CSP"]
DATABASE = os.environ["BENCH_SQLITE"]
QUERY = ("SELECT l.used_at, l.revoked_at, l.expires_at, c.name, c.email, c.legacy_id "
         "FROM links l JOIN customers c ON c.id = l.customer_id WHERE l.public_id = ?")
_local = threading.local()


def _db() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(DATABASE)  # one per gunicorn thread
    return conn


@app.get("/u/<token>")
def page(token: str):
    public_id = LINKS.loads(token, max_age=MAX_AGE)
    row = _db().execute(QUERY, (public_id,)).fetchone()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if row is None or row[0] or row[1] or row[2] <= now:
        return "This link can no longer be used.", 410
    raw = hashlib.sha1(os.urandom(64)).hexdigest()
    session["csrf_token"] = raw
    session["link_token"] = token
    nonce = secrets.token_urlsafe(18)
    body = (SKELETON.replace("@@nonce@@", nonce)
            .replace("@@csrf@@", CSRF.dumps(raw))
            .replace("@@name@@", str(escape(row[3])))
            .replace("@@email@@", str(escape(row[4])))
            .replace("@@reference@@", str(escape(row[5]))))
    response = app.response_class(body)
    headers = response.headers
    headers["Content-Security-Policy"] = CSP.replace("@@nonce@@", nonce)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "strict-origin"
    headers["Cache-Control"] = "no-store"
    headers["Pragma"] = "no-cache"
    return response
