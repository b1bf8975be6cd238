"""Checking a task input against an agent's declared input schema, the same way on both sides.

An agent declares a JSON schema for its input (`supernet.sdk.agents.Agent.input_schema`); the
node publishes it in ``GET /v1/node``'s ``agentCards`` and refuses a task whose input does not
match (400 ``input_schema_mismatch``), and the client checks it before signing, so a user learns
of a wrong input without reserving a nonce or making a deposit. Both call `input_problem`, so the
two can never disagree on what an input is. An empty schema (``{}``) accepts any input.

>>> input_problem({"type": "object", "required": ["q"]}, {"x": 1})
"at (the input): 'q' is a required property"
>>> input_problem({}, "anything") is None
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jsonschema
import rfc8785


def input_problem(schema: Mapping[str, Any], task_input: Any) -> str | None:
    """None if ``task_input`` matches ``schema`` (draft 2020-12), else where and why it does not.

    Raises:
        jsonschema.SchemaError: the schema itself is not a valid JSON schema.
    """
    if not schema:
        return None
    validator = _validator(rfc8785.dumps(dict(schema)))
    error = jsonschema.exceptions.best_match(validator.iter_errors(task_input))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(the input)"
    return f"at {where}: {error.message}"


@lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> jsonschema.protocols.Validator:
    """One compiled validator per distinct schema (keyed by its canonical JSON)."""
    schema = json.loads(schema_json)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)
