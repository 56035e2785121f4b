"""The floor for bench/page.py: a bare Flask route serving a body as large as the real page."""

import os

from flask import Flask

app = Flask(__name__)
BODY = "x" * int(os.environ.get("BENCH_BODY_SIZE", "1"))


@app.get("/bare")
def bare():
    return BODY
