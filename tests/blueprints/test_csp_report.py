"""/csp-report: takes browsers' reports, never fails on what a stranger sends, logs safely."""

from __future__ import annotations

import json
import logging


def test_a_report_is_logged_with_its_directive_and_blocked_origin(client, caplog):
    caplog.set_level(logging.WARNING, logger="cardbridge.csp")
    report = {"csp-report": {"violated-directive": "script-src", "document-uri":
                             "https://x.test/u/SECRET-TOKEN-abcdefghijkl",
                             "blocked-uri": "https://evil.example/x.js"}}
    response = client.post("/csp-report", data=json.dumps(report),
                           content_type="application/csp-report")
    assert response.status_code == 204
    text = caplog.text
    assert "script-src" in text and "evil.example" in text
    assert "SECRET-TOKEN" not in text


def test_deeply_nested_json_answers_400_not_500(client):
    body = "[" * 5000 + "]" * 5000
    response = client.post("/csp-report", data=body, content_type="application/json")
    assert response.status_code == 400


def test_not_an_object_answers_400(client):
    for body in ("[1, 2]", "\"text\"", "{\"csp-report\": 3}", "not json"):
        assert client.post("/csp-report", data=body,
                           content_type="application/json").status_code == 400


def test_newlines_in_a_report_cannot_forge_log_lines(client, caplog):
    caplog.set_level(logging.WARNING, logger="cardbridge.csp")
    forged = "script-src\n2026-12-05 ERROR cardbridge: staff admin@example.com deleted"
    client.post("/csp-report", data=json.dumps({"csp-report": {
        "violated-directive": forged, "blocked-uri": "inline\nERROR forged"}}),
        content_type="application/csp-report")
    messages = [r.getMessage() for r in caplog.records if r.name == "cardbridge.csp"]
    assert messages and all("\n" not in m for m in messages)


def test_reports_are_limited_per_address(client):
    statuses = {client.post("/csp-report", data="{}", content_type="application/json").status_code
                for _ in range(70)}
    assert 429 in statuses
