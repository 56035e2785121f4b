"""Schemathesis fuzzes /api/v1 from its own OpenAPI document: no 5xx, every response as
documented (status, content type, body schema), invalid input refused."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from cardbridge.extensions import db
from cardbridge.staff import api_tokens

EXAMPLES = 25


@pytest.fixture
def api_app(make_app, make_customer):
    app = make_app(API_RATE_LIMIT="100000 per minute")
    make_customer(legacy_id="L-1", stripe_customer_id="cus_Fuzz1")
    with app.app_context():
        secret = api_tokens.create_token("fuzz", created_by="test").secret
        db.session.commit()
    return app, {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_matches_its_openapi_document(api_app, mode):
    app, headers = api_app
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        case.call_and_validate(headers=headers)

    fuzz()
