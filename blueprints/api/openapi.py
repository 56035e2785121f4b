"""OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json and fuzzed by schemathesis."""

from __future__ import annotations

ERROR_CODES = [
    "missing_token", "invalid_token", "token_revoked", "invalid_json", "invalid_request",
    "customer_not_found", "rate_limited", "not_found", "method_not_allowed",
    "request_entity_too_large", "internal",
]

_TS = {"type": ["string", "null"], "format": "date-time"}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document(max_days: int, base_url: str) -> dict:
    common = {
        "401": _error("No token, an unknown token, or a revoked token"),
        "429": {**_error("Too many calls with this token; wait `Retry-After` seconds"),
                "headers": {"Retry-After": {"schema": {"type": "string"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cardbridge staff API",
            "version": "1.0.0",
            "description": "Make and inspect customer card-update links. Authenticate with "
                           "`Authorization: Bearer <token>` from `flask api-token create`.",
        },
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/links": {
                "post": {
                    "operationId": "createLink",
                    "summary": "Make a new link for a customer (earlier links stop working)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/NewLink"}}},
                    },
                    "responses": {
                        "201": {"description": "The link, shown once",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/IssuedLink"}}}},
                        "400": _error("The body is not JSON or a field is wrong"),
                        "404": _error("No customer with that id"),
                        **common,
                    },
                },
            },
            "/api/v1/customers/{legacy_id}": {
                "get": {
                    "operationId": "getCustomer",
                    "summary": "A customer's status, Stripe ids and link history",
                    "parameters": [{"name": "legacy_id", "in": "path", "required": True,
                                    "schema": {"type": "string", "minLength": 1,
                                               "maxLength": 255}}],
                    "responses": {
                        "200": {"description": "The customer",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Customer"}}}},
                        "404": _error("No customer with that id"),
                        **common,
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "description": "stable code",
                                  "examples": ERROR_CODES},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
                "NewLink": {
                    "type": "object",
                    "required": ["customer"],
                    "additionalProperties": False,
                    "properties": {
                        "customer": {"type": "string", "minLength": 1, "maxLength": 255,
                                     "description": "legacy customer id or Stripe cus_ id"},
                        "send": {"type": "boolean", "default": False,
                                 "description": "also email the link to the customer"},
                        "days": {"type": "integer", "minimum": 1, "maximum": max_days,
                                 "description": "how long the link lives"},
                        "reason": {"type": "string", "maxLength": 500,
                                   "description": "kept in the audit trail"},
                    },
                },
                "IssuedLink": {
                    "type": "object",
                    "required": ["url", "link_id", "expires_at"],
                    "properties": {
                        "url": {"type": "string", "format": "uri"},
                        "link_id": {"type": "string"},
                        "expires_at": {"type": "string", "format": "date-time"},
                        "customer": {"type": "string"},
                        "status": {"$ref": "#/components/schemas/Status"},
                        "sent": {"type": "boolean"},
                    },
                },
                "Status": {"type": "string",
                           "enum": ["ready", "needs_update", "invited", "updated"]},
                "Customer": {
                    "type": "object",
                    "required": ["legacy_id", "status", "stripe_customer_id", "links"],
                    "properties": {
                        "legacy_id": {"type": "string"},
                        "email": {"type": "string"},
                        "name": {"type": ["string", "null"]},
                        "status": {"$ref": "#/components/schemas/Status"},
                        "stripe_customer_id": {"type": ["string", "null"]},
                        "payment_method_id": {"type": ["string", "null"]},
                        "updated_at": _TS,
                        "links": {"type": "array", "items": {
                            "type": "object",
                            "required": ["link_id", "state", "created_at", "expires_at"],
                            "properties": {
                                "link_id": {"type": "string"},
                                "state": {"type": "string",
                                          "enum": ["live", "used", "revoked", "expired"]},
                                "channel": {"type": "string"},
                                "created_by": {"type": "string"},
                                "created_at": {"type": "string", "format": "date-time"},
                                "expires_at": {"type": "string", "format": "date-time"},
                                "opened_at": _TS, "used_at": _TS, "revoked_at": _TS,
                            },
                        }},
                    },
                },
            },
        },
    }
