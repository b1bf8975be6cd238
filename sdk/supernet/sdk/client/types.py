"""Value types and small helpers of the client: errors, node choices, tasks, JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from supernet.sdk.errors import SupernetError


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
    info: dict[str, Any]
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


def serves_model(info: dict[str, Any], model: str) -> bool:
    return any(m.lower() == model.lower() for m in info.get("models", [])) or model in info.get(
        "modelNames", {}
    )


def pick_model_id(info: dict[str, Any], model: str | None) -> str:
    models: list[str] = info["models"]
    if model is None:
        return models[0]
    if model.startswith("0x") and model.lower() in [m.lower() for m in models]:
        return model.lower()
    named = info.get("modelNames", {}).get(model)
    if named is None:
        raise ClientError(f"node does not serve model {model!r}")
    return str(named)
