"""Value types and small helpers of the client: errors, node choices, tasks, JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import jsonschema
from pydantic import BaseModel, ValidationError
from supernet.sdk.agents.input_schema import input_problem
from supernet.sdk.errors import SupernetError
from supernet.sdk.node_api import NodeInfo

M = TypeVar("M", bound=BaseModel)


class ClientError(SupernetError, RuntimeError):
    """No suitable node, a refused request (``status`` and the node's ``error`` body), a failed task."""

    def __init__(self, message: str, status: int | None = None, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error or {}


@dataclass(frozen=True)
class NodeChoice:
    """A node picked for a task, with what its API says about signing for it."""

    address: str
    url: str
    price_per_token: int
    stake: int
    info: NodeInfo
    slash_count: int = 0
    latency_s: float | None = None


@dataclass(frozen=True)
class PreparedTask:
    """A signed, not yet submitted task: ``signed`` is the body's authentication part."""

    task_id: str
    node: NodeChoice
    signed: dict[str, Any]
    agent: str
    input: str | dict[str, Any]
    model_id: str
    fee: int
    cumulative: int

    def task_body(self) -> dict[str, Any]:
        """The ``POST /v1/tasks`` body."""
        return {**self.signed, "agent": self.agent, "input": self.input}


@dataclass(frozen=True)
class TaskResult:
    """A finished task."""

    task_id: str
    node: str
    node_url: str
    status: str
    output: str
    fee: int
    trace_cid: str | None


@dataclass(frozen=True)
class RefundClaimed:
    """A fraud verdict's refund credited to this user's ``claimable`` (pull it with ``withdraw``)."""

    task_id: str
    challenge_id: int
    amount: int


def answer(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            err = resp.json().get("error", {})
        except ValueError:
            err = {"message": resp.text[:200]}
        raise ClientError(
            f"{resp.request.method} {resp.request.url}: {resp.status_code} {err.get('message')}",
            resp.status_code,
            err,
        )
    return resp.json()


def parse(model: type[M], doc: Any, what: str) -> M:
    """``doc`` (a node's JSON answer) as ``model``, or a `ClientError` naming what was malformed:
    a node's answer is input like any other, and a wrong one must not surface as a ``KeyError``."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise ClientError(
            f"{what}: malformed answer ({exc.error_count()} problem(s); first at {where}: {first['msg']})"
        ) from None


def serves_model(info: NodeInfo, model: str) -> bool:
    return any(m.lower() == model.lower() for m in info.models) or model in info.modelNames


def pick_model_id(info: NodeInfo, model: str | None) -> str:
    if not info.models:
        raise ClientError(f"node {info.address} serves no model")
    if model is None:
        return info.models[0].lower()
    if model.startswith("0x") and model.lower() in [m.lower() for m in info.models]:
        return model.lower()
    named = info.modelNames.get(model)
    if named is None:
        raise ClientError(f"node does not serve model {model!r}")
    return named.lower()


def check_input(info: NodeInfo, agent: str, task_input: Any) -> None:
    """Refuse, before anything is signed, an input the agent's published schema rejects (the node
    would answer 400 ``input_schema_mismatch``; `supernet.sdk.agents.input_schema`)."""
    card = next((c for c in info.agentCards if c.id == agent), None)
    if card is None:
        return
    try:
        problem = input_problem(card.inputSchema, task_input)
    except jsonschema.SchemaError:
        return  # the node published a schema that is none: its own admission check decides
    if problem is not None:
        raise ClientError(f"input does not match agent {agent!r}'s input schema {problem}")
