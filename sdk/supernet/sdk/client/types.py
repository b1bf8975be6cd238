"""Value types and small helpers of the client: errors, node choices, tasks, JSON shapes."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import httpx
import jsonschema
from pydantic import BaseModel, ValidationError
from supernet.sdk.agents.input_schema import input_problem
from supernet.sdk.errors import SupernetError
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.profile import AgentProfile, profile_hash_or_reason
from supernet.sdk.formats.trace import Limits
from supernet.sdk.models import COMPUTE_PRECISIONS, served_model_id
from supernet.sdk.node_api import NodeInfo, ServedFormat

M = TypeVar("M", bound=BaseModel)


class ClientError(SupernetError, RuntimeError):
    """No suitable node, a refused request (``status`` and the node's ``error`` body), a failed task.

    ``malformed``: the node's answer was not what the API answers (a body that is not JSON, an
    error body not of the ``{"error": {...}}`` form, a document of the wrong shape): the node's
    failure, never a refusal of the request."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        error: dict[str, Any] | None = None,
        *,
        malformed: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error or {}
        self.malformed = malformed


class NodeUnreachableError(ClientError):
    """No whole answer from a node: no connection, a broken one, or no complete answer within
    the client's deadline. ``nothing_sent``: the connection failed, so the request never left."""

    def __init__(
        self, url: str, reason: str, *, nothing_sent: bool = False, message: str | None = None
    ) -> None:
        super().__init__(message or f"the node at {url} cannot be reached: {reason}")
        self.url, self.reason, self.nothing_sent = url, reason, nothing_sent


MAX_ANSWER_BYTES = 4 << 20
"""Most bytes of one node answer the client reads (`read_bounded`; more is a `ClientError` naming
the node). Without a bound, a node streaming a body without a length (or with a false one) makes
the client hold whatever it sends. Honest answers are bounded by the protocol: the largest is a task
document (``GET /v1/tasks/{id}``, a ``done`` event) whose output fits a trace of
`supernet.sdk.formats.trace.MAX_TRACE_BYTES` (384 KiB; at most ~2.3 MiB even with every byte
JSON-escaped as ``\\u00XX``); receipts, proofs, promises and accounts are a few KB."""


async def read_bounded(resp: httpx.Response, what: str, bound: int = MAX_ANSWER_BYTES) -> bytes:
    """``resp``'s body (a streamed response), refused past ``bound`` bytes (decoded: a compressed
    body cannot slip past it).

    Raises:
        ClientError: the answer is longer than ``bound`` (``malformed``: no honest answer is).
    """

    def too_long(size: int | str) -> ClientError:
        return ClientError(
            f"{what}: the node sent an answer of {size} bytes, over the {bound} bytes no honest "
            "answer exceeds: not read",
            malformed=True,
        )

    declared = resp.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > bound:
        raise too_long(int(declared))
    body = bytearray()
    async for piece in resp.aiter_bytes():
        body += piece
        if len(body) > bound:
            raise too_long(f"over {len(body)}")
    return bytes(body)


def normal_url(url: str) -> str:
    """``url`` as compared with a node's registered endpoint: the scheme and host in lower case,
    the port explicit (80, 443 by default), no trailing slash (an unparsable URL: as it is)."""
    try:
        u = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError):
        return url.strip()
    port = u.port if u.port is not None else {"http": 80, "https": 443}.get(u.scheme)
    path = u.path.rstrip("/")
    query = f"?{u.query.decode()}" if u.query else ""
    return f"{u.scheme.lower()}://{u.host.lower()}:{port}{path}{query}"


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
    limits: Limits | None = None
    """The limits of the agent profile signed (``agentHash``): what its stream may carry."""

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
    """A node's JSON answer, or a `ClientError`: with the status and ``error`` object of a
    refusal (4xx) or failure (5xx), ``malformed`` when the body is not the API's (not JSON, an
    ``error`` that is not an object, a success body that is not JSON). A node's answer is input
    like any other: whatever it holds, only a `ClientError` comes out."""
    where = f"{resp.request.method} {resp.request.url}"
    if resp.status_code >= 400:
        err, malformed = _error_of(resp)
        raise ClientError(
            f"{where}: {resp.status_code} {err.get('message')}", resp.status_code, err, malformed=malformed
        )
    try:
        return resp.json()
    except ValueError:  # not JSON, or not text (JSONDecodeError and UnicodeDecodeError both)
        raise ClientError(
            f"{where}: {resp.status_code} with a body that is not JSON ({resp.text[:80]!r})", malformed=True
        ) from None


def _error_of(resp: httpx.Response) -> tuple[dict[str, Any], bool]:
    """A refusal's ``error`` object, and whether the body was malformed (not ``{"error": {...}}``:
    then its text, or its ``error`` value, is the message)."""
    try:
        doc = resp.json()
    except ValueError:
        return {"message": resp.text[:200]}, True
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        return error, False
    return {"message": str(doc if error is None else error)[:200]}, True


def parse(model: type[M], doc: Any, what: str) -> M:
    """``doc`` (a node's JSON answer) as ``model``, or a `ClientError` naming what was malformed:
    a node's answer is input like any other, and a wrong one must not surface as a ``KeyError``."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise ClientError(
            f"{what}: malformed answer ({exc.error_count()} problem(s); first at {where}: {first['msg']})",
            malformed=True,
        ) from None


def serves_model(info: NodeInfo, model: str) -> bool:
    """Whether the node lists ``model``: a ``0x`` id among its ids (only ever that id), else a name."""
    if model.startswith("0x"):
        return any(m.lower() == model.lower() for m in info.models)
    return model in info.modelNames


DEFAULT_PRECISIONS: tuple[str, ...] = tuple(p for p in COMPUTE_PRECISIONS if p != "bfloat16")
"""The compute formats a client signs a model id in unless told otherwise: those a validator
re-scores in their own format under float32's tight bounds. A bfloat16 id is judged within the
bf16 pair's wider bounds (bf16 is not batch-invariant: 0.6 nat for a greedy token, 0.1 of the
draw's mass for a sampled one), inside which a node computing in float32 chooses among near-tied
answers and verifies clean (docs/security-parameters.md, "Known limits"). So a client signs a
bfloat16 id only when its caller lists ``"bfloat16"`` in ``precisions``."""


def served_format(info: NodeInfo, model_id: str, formats: Mapping[str, ServedFormat] | None = None) -> str:
    """The compute format of ``model_id`` (lower-case ``0x`` id) as the node states it in
    ``modelFormats`` and the id proves: the id must be the hash of the stated weights and format
    (`supernet.sdk.models.served_model_id`), so a node cannot state another format than the one a
    validator will judge it in.

    ``formats``: ``info.modelFormats`` keyed by lower-case id (`_formats`), when the caller has it.

    Raises:
        ClientError: the node states no format for the id, or one the id is not the hash of.
    """
    stated = (_formats(info) if formats is None else formats).get(model_id)
    if stated is None:
        raise ClientError(
            f"node {info.address} does not state what model {model_id} is computed in (no modelFormats "
            "entry in its /v1/node): nothing is signed for a model id of unknown precision"
        )
    try:
        proven = served_model_id(stated.weights, stated.compute) == model_id
    except ValueError:  # an unknown compute format
        proven = False
    if not proven:
        # the node's own words are quoted only where they name a known format
        shown = (
            repr(stated.compute)
            if stated.compute in COMPUTE_PRECISIONS
            else "a format this client does not know"
        )
        raise ClientError(
            f"node {info.address} states that model {model_id} is weights {stated.weights} computed in "
            f"{shown}, but the id is not the hash of that"
        )
    return stated.compute


def _formats(info: NodeInfo) -> dict[str, ServedFormat]:
    return {m.lower(): f for m, f in info.modelFormats.items()}


def _signable(
    info: NodeInfo, model_id: str, precisions: Collection[str], formats: Mapping[str, ServedFormat]
) -> str:
    compute = served_format(info, model_id, formats)
    if compute not in precisions:
        why = (
            "; a bfloat16 id lets the node choose among near-tied answers inside the bf16 bounds "
            "(docs/security-parameters.md): accept it with precisions including 'bfloat16'"
            if compute == "bfloat16"
            else ""
        )
        raise ClientError(
            f"model {model_id} of node {info.address} is computed in {compute}, which this client does "
            f"not sign for (it accepts {', '.join(precisions) or 'none'}){why}"
        )
    return model_id


def pick_model_id(info: NodeInfo, model: str | None, precisions: Collection[str] = DEFAULT_PRECISIONS) -> str:
    """The model id to sign for ``model`` (a name or ``0x`` id; None: the first the node lists
    that this client signs for) at this node, in one of ``precisions`` (`served_format`). A ``0x``
    id is signed as that id or not at all: the node's ``modelNames`` resolve names only, so a node
    cannot answer an id the user named with another.

    Raises:
        ClientError: the node does not serve ``model``, or not in a format this client accepts.
    """
    if not info.models:
        raise ClientError(f"node {info.address} serves no model")
    formats = _formats(info)
    if model is None:
        problems = []
        for listed in info.models:
            try:
                return _signable(info, listed.lower(), precisions, formats)
            except ClientError as exc:
                problems.append(str(exc))
        more = f" (and {len(problems) - 1} more like it)" if len(problems) > 1 else ""
        raise ClientError(f"node {info.address} serves no model this client signs for: {problems[0]}{more}")
    if model.startswith("0x"):
        if model.lower() not in (m.lower() for m in info.models):
            raise ClientError(f"node does not serve model {model!r}")
        return _signable(info, model.lower(), precisions, formats)
    named = info.modelNames.get(model)
    if named is None:
        raise ClientError(f"node does not serve model {model!r}")
    return _signable(info, named.lower(), precisions, formats)


DEFAULT_MIN_LIMITS: Mapping[str, int] = MappingProxyType(
    {"max_llm_calls": 1, "max_llm_tokens": 16, "max_new_tokens": 16}
)
"""The least budget the client signs for by default (``min_limits``): at least one LLM call of 16
tokens. A node that lists ``max_llm_calls = 0`` would otherwise sell an agent's fallback answer,
verified clean, for the price of a model run."""


def agent_profile(
    info: NodeInfo, agent: str, min_limits: Mapping[str, int] = DEFAULT_MIN_LIMITS
) -> tuple[str, AgentProfile]:
    """The ``agentHash`` to sign for ``agent`` on this node, and the profile it is the hash of.

    The user signs the whole profile (the agent's id and code, limits and tools), so a node cannot
    run the task under a smaller budget or with a tool relabelled; this checks that the hash the
    node asks for is the hash of a profile *of that agent* (the request names no agent id: a
    profile of another agent would run that agent, and verify clean) with at least ``min_limits``
    (limit name -> least value, e.g. ``{"max_tool_calls": 4}``).

    Raises:
        ClientError: the node does not run ``agent``, lists no readable profile for it, lists one
            of another agent or code, or whose hash is not the ``agentHash`` it asks for, or whose
            limits are below ``min_limits``.
    """
    agent_hash = info.agents.get(agent)
    if agent_hash is None:
        raise ClientError(f"node {info.address} does not run agent {agent!r}")
    card = next((c for c in info.agentCards if c.id == agent), None)
    if card is None or card.profile is None:
        raise ClientError(
            f"node {info.address} lists no profile of agent {agent!r}: nothing says what it signs"
        )
    try:
        profile = AgentProfile.from_json(card.profile)
    except FormatError as exc:
        raise ClientError(
            f"node {info.address} lists an unreadable profile of agent {agent!r}: {exc}"
        ) from None
    if profile.agent.id != agent or profile.agent.code_hash.lower() != card.codeHash.lower():
        raise ClientError(
            f"node {info.address} lists for agent {agent!r} (code {card.codeHash}) the profile of "
            f"agent {profile.agent.id!r} (code {profile.agent.code_hash})"
        )
    if profile_hash_or_reason(profile) != agent_hash.lower():
        raise ClientError(
            f"node {info.address} asks to sign {agent_hash} for agent {agent!r}, "
            f"which is not the hash of the profile it lists ({profile_hash_or_reason(profile)})"
        )
    limits = profile.limits.to_dag()
    short = sorted(
        (name, limits.get(name), least) for name, least in min_limits.items() if limits.get(name, 0) < least
    )
    if short:
        raise ClientError(
            f"node {info.address} runs agent {agent!r} with less than this client signs for: "
            + ", ".join(f"{name} {got} < {least}" for name, got, least in short)
        )
    return agent_hash, profile


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
