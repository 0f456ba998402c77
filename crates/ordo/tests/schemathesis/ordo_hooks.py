"""Hooks of the schemathesis run in tests/openapi_contract.rs (SCHEMATHESIS_HOOKS=ordo_hooks).

They keep schemathesis's labels of its own cases honest. schemathesis generates strings for
patterns with Unicode property classes (`\\p{L}`, `\\p{M}`, `\\p{N}`: ordo's identifiers) from
approximations: `\\p{M}` by whole Unicode blocks, unassigned code points included (U+20F1 to
U+20FF); `\\p{N}` by `[0-9]`, so that "not a number" may be U+1ECB4, which is one. Its own
validator, which knows Unicode, disagrees with such labels, and so does ordo. Without these hooks
a "valid" identifier that is not one (ordo refuses it: 400) or an "invalid" one that is valid
(ordo accepts it) would count as failures of ordo. So:

- a positive case whose path parameter breaks its schema (by schemathesis's own validator), or
  that holds an unassigned code point anywhere, is left out;
- a negative case whose only invalid part is its path, and whose path parameters all satisfy
  their schemas after all, is left out.

Everything else, ordo's answers and every check, is untouched.

A third hook signs payment callbacks, as a provider does (`Ordo-Signature` over the raw body with
the sandbox provider's secret, `ORDO_SCHEMATHESIS_CALLBACK_SECRET`), so that a callback reaches
more than the signature check: its body's validation, the payment lookup. A case whose signature
header is missing, or is itself the invalid part, is sent as generated.
"""

import hashlib
import hmac
import json
import os
import time
import unicodedata
from urllib.parse import unquote

import jsonschema_rs
import schemathesis

_VALIDATORS = {}


def _validator(schema):
    key = repr(schema)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = jsonschema_rs.validator_for(schema)
    return _VALIDATORS[key]


def _path_parameters_valid(case):
    """Whether every path parameter (percent-decoded) satisfies its schema."""
    for parameter in case.operation.path_parameters:
        schema = parameter.definition.get("schema")
        value = (case.path_parameters or {}).get(parameter.name)
        if isinstance(schema, dict) and isinstance(value, str):
            if not _validator(schema).is_valid(unquote(value)):
                return False
    return True


def _unassigned(value):
    if isinstance(value, str):
        return any(unicodedata.category(c) == "Cn" for c in value)
    if isinstance(value, dict):
        return any(_unassigned(k) or _unassigned(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_unassigned(v) for v in value)
    return False


@schemathesis.hook
def filter_case(context, case):
    meta = case.meta
    if meta is None:
        return True
    if meta.generation.mode.is_positive:
        path = [unquote(v) if isinstance(v, str) else v for v in (case.path_parameters or {}).values()]
        if any(_unassigned(part) for part in (path, case.query, case.body)):
            return False
        return _path_parameters_valid(case)
    negative = {location.name for location, info in meta.components.items() if info.mode.is_negative}
    if negative == {"PATH"} and _path_parameters_valid(case):
        return False
    return True


_CALLBACKS = "/v1/payments/callbacks/{provider}"
_SIGNATURE = "Ordo-Signature"


@schemathesis.hook
def before_call(context, case, kwargs):
    secret = os.environ.get("ORDO_SCHEMATHESIS_CALLBACK_SECRET")
    if secret is None or case.operation.path != _CALLBACKS:
        return
    headers = case.headers or {}
    if _SIGNATURE not in headers:
        return
    meta = case.meta
    if meta is not None and any(
        location.name == "HEADER" and info.mode.is_negative for location, info in meta.components.items()
    ):
        return
    # The bytes requests sends for a JSON body (`json=`): json.dumps with its defaults.
    if isinstance(case.body, (bytes, bytearray)):
        raw = bytes(case.body)
    else:
        try:
            raw = json.dumps(case.body, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            return
    timestamp = int(time.time())
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + raw, hashlib.sha256)
    case.headers[_SIGNATURE] = f"t={timestamp},v1={mac.hexdigest()}"
