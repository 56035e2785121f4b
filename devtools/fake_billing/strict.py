"""The fake's strictness: every parameter of a route the app uses is checked against
stripe-python's own generated TypedDict for that endpoint (`stripe.params`), so an unknown key
at any depth, a value outside a Literal, a non-integer where Stripe wants one, or a missing
required key is refused as Stripe refuses it (400, `param` naming it). `STRICT` lists the
routes and their types; `strict_middleware` checks them before any handler (ours or
localstripe's) runs."""

from __future__ import annotations

import functools
import sys
import types
import typing
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

import stripe
from aiohttp import web
from localstripe import server
from localstripe.errors import UserError
from stripe._request_options import RequestOptions
from stripe._stripe_context import StripeContext


def check(value: Any, kind: Any, param: str) -> None:
    """Raise Stripe's 400 unless `value` (form-decoded: leaves are strings) fits `kind`."""
    origin = get_origin(kind)
    if origin in (Required, NotRequired):
        return check(value, get_args(kind)[0], param)
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if str in options and any(get_origin(o) is Literal for o in options):
            # The SDK types an enum as `Literal[...] | str` to accept values newer than
            # itself; the API of its pinned version accepts only the listed ones.
            options = tuple(o for o in options if o is not str)
        problems = []
        for option in options:
            try:
                return check(value, option, param)
            except UserError as exc:
                problems.append(exc)
        raise problems[0]
    checker = _CHECKS.get(origin) or _CHECKS.get(kind)
    if checker is not None:
        return checker(value, kind, param)
    if isinstance(kind, type) and hasattr(kind, "__annotations__"):  # a TypedDict
        return check_object(value, kind, param)
    return None


def _literal(value, kind, param):
    if str(value) not in map(str, get_args(kind)):
        raise invalid(param, "parameter_invalid_string",
                       f"Invalid {param}: must be one of {', '.join(map(str, get_args(kind)))}")


def _list(value, kind, param):
    if not isinstance(value, list):
        raise invalid(param, "parameter_invalid_array", f"Invalid array: {param}")
    for n, item in enumerate(value):
        check(item, get_args(kind)[0], f"{param}[{n}]")


def _hash(value, kind, param):
    if not isinstance(value, dict):
        raise invalid(param, "parameter_invalid_object", f"Invalid hash: {param}")


def _integer(value, kind, param):
    if not (isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())):
        raise invalid(param, "parameter_invalid_integer", f"Invalid integer: {value}")


def _boolean(value, kind, param):
    if str(value).lower() not in ("true", "false"):
        raise invalid(param, "parameter_invalid_boolean", f"Invalid boolean: {value}")


def _string(value, kind, param):
    if isinstance(value, (dict, list)):
        raise invalid(param, "parameter_invalid_string", f"Invalid string: {param}")


_CHECKS = {Literal: _literal, list: _list, typing.List: _list, dict: _hash,  # noqa: UP006
           typing.Dict: _hash, int: _integer, bool: _boolean, str: _string,  # noqa: UP006
           float: _string}


def check_object(value: Any, typed: type, param: str = "") -> None:
    if not isinstance(value, dict):
        raise invalid(param, "parameter_invalid_object", f"Invalid object: {param}")
    hints = _hints(typed)
    for key, item in value.items():
        name = f"{param}[{key}]" if param else key
        if key == "expand":
            continue
        if key not in hints:
            raise invalid(name, "parameter_unknown", f"Received unknown parameter: {name}")
        check(item, hints[key], name)
    for key in getattr(typed, "__required_keys__", ()):
        if key not in value:
            name = f"{param}[{key}]" if param else key
            raise invalid(name, "parameter_missing", f"Missing required param: {name}.")


@functools.cache
def _hints(typed: type) -> dict:
    """The TypedDict's fields; names stripe-python imports only for type checkers (such as
    StripeContext) resolve against the stripe package itself."""
    namespace = {**vars(typing), **vars(stripe), **vars(sys.modules[typed.__module__]),
                 "StripeContext": StripeContext}
    hints = typing.get_type_hints(typed, globalns=namespace, include_extras=True)
    # Some params classes extend the SDK's RequestOptions (api_key, idempotency_key, …):
    # those travel as headers, never as parameters.
    return {k: v for k, v in hints.items() if k not in RequestOptions.__annotations__}


def invalid(param: str, code: str, message: str) -> UserError:
    return UserError(400, message, {"code": code, "param": param})





async def request_data(request: web.Request) -> dict:
    """The request's parameters, form-decoded: the query for GET and DELETE (as stripe-python
    sends them), the body otherwise."""
    if request.method in ("GET", "DELETE"):
        return server.unflatten_data(request.query) or {}
    return await server.get_post_data(request) or {}


async def params(request: web.Request, typed: type) -> dict:
    data = await request_data(request)
    check_object(data, typed)
    return data


# (method, route path) → the stripe.params type its parameters must fit; filled by install().
STRICT: dict[tuple[str, str], type] = {}


@web.middleware
async def strict_middleware(request: web.Request, handler):
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    typed = STRICT.get((request.method, resource.canonical if resource else ""))
    if typed is not None:
        check_object(await request_data(request), typed)
    return await handler(request)


def page(objects: list[dict], data: dict) -> web.Response:
    """One page of a Stripe list, oldest first, after `starting_after`."""
    objects = sorted(objects, key=lambda o: (o["created"], o["id"]))
    after = data.get("starting_after")
    if after:
        ids = [o["id"] for o in objects]
        objects = objects[ids.index(after) + 1:] if after in ids else []
    limit = int(data.get("limit", 10))
    return server.json_response({"object": "list", "data": objects[:limit],
                                 "has_more": len(objects) > limit, "url": "/v1/list"})
