"""The node's public HTTP API, typed: one definition for the node that answers and the client that reads.

The node's FastAPI routes declare these as their request bodies and ``response_model`` (so the
published OpenAPI document is generated from them), and `supernet.sdk.client.Client` parses every
answer into them, so a field the node renames or retypes fails in the node's own tests instead
of in a user's ``KeyError``. Field names follow docs/protocol.md (camelCase, as in the signed
EIP-712 structs). Integers of uint256 range are accepted as JSON numbers or decimal strings and
returned as decimal strings; parsed here, they are Python ints again. Answers tolerate fields
this version does not know (a newer node), requests do not (``extra="forbid"``).

>>> info = NodeInfo.model_validate(node_json)        # doctest: +SKIP
>>> info.taskFee                                      # doctest: +SKIP
1000000000000000
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from supernet.sdk.store.cids import canonical_cid
from supernet.sdk.store.errors import InvalidCIDError

Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Bytes32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
Signature = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]
_UINT256_DECIMAL = {"type": "string", "pattern": "^[0-9]{1,78}$", "description": "uint256, decimal"}
Uint256 = Annotated[
    int,
    Field(ge=0, lt=2**256),
    PlainSerializer(str, return_type=str),
    # the bound as JSON Schema would be a float (1.157920892373162e+77) that loses the exact value:
    # published as an integer or a decimal string instead, the bound is enforced by the validator
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0}, _UINT256_DECIMAL], "description": "uint256 (< 2**256)"},
        mode="validation",
    ),
    WithJsonSchema(_UINT256_DECIMAL, mode="serialization"),
]
AgentId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Deadline = Annotated[
    int,
    Field(ge=0, lt=2**63, description="unix seconds, below 2**63"),
    PlainSerializer(str, return_type=str),
]
TaskInput = str | dict[str, Any]


def _cid(value: str) -> str:
    try:
        return canonical_cid(value)
    except InvalidCIDError:  # the value itself is not repeated: it may be long, or made to mislead
        raise ValueError("not a CIDv1 (sha2-256, raw or dag-cbor)") from None


Cid = Annotated[
    str,
    StringConstraints(max_length=128),
    AfterValidator(_cid),
    WithJsonSchema({"type": "string", "description": "CIDv1, sha2-256, raw or dag-cbor (base32)"}),
]
"""A content CID, read in its canonical form (CIDv1 base32): nothing else, so a node's answer
cannot carry arbitrary text (terminal escapes, a fake verdict) where a CID belongs."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskRequestBody(_Strict):
    """The EIP-712 ``TaskRequest`` the user signed."""

    user: Address
    node: Address
    modelId: Bytes32
    agentHash: Bytes32
    inputHash: Bytes32
    maxFee: Uint256
    nonce: Uint256
    deadline: Deadline


class VoucherBody(_Strict):
    """The user's cumulative voucher to this node (``user`` and ``node`` are the request's)."""

    cumulativeAmount: Uint256
    signature: Signature


class SignedTask(_Strict):
    """Authentication of one paid task: the signed request and the voucher that pays for it."""

    request: TaskRequestBody
    signature: Signature
    voucher: VoucherBody


class TaskCreate(SignedTask):
    """``POST /v1/tasks``: the input, the agent that runs it, and the signatures."""

    agent: AgentId = "chat"
    input: TaskInput


class TaskPublic(BaseModel):
    """A task as the API shows it."""

    id: Bytes32
    status: Literal["accepted", "running", "done", "failed", "refused"]
    user: Address
    agent: str
    modelId: Bytes32
    nonce: Uint256
    fee: Uint256
    output: str | None = None
    traceCid: str | None = None
    error: str | None = None
    createdAt: float
    updatedAt: float


class BatchInfo(BaseModel):
    """Where a receipt was committed, with its Merkle proof against the on-chain root."""

    localId: int
    status: Literal["sealed", "sent", "committed"]
    chainBatchId: int | None
    root: Bytes32
    index: int
    manifestCid: str
    txHash: str | None
    proof: list[Bytes32] | None


class PromisePublic(BaseModel):
    """The node's EIP-712 ``ReceiptPromise(requestHash, leaf, commitBy)`` of a receipt: it will be
    committed in one of the node's batches by ``commitBy`` (unix seconds), or the task's user can
    get the node slashed (``OmissionManager.challengeOmission``)."""

    commitBy: int
    signature: Signature


class ReceiptPublic(BaseModel):
    """``GET /v1/tasks/{id}/receipt``."""

    taskId: Bytes32
    node: Address
    receipt: dict[str, str]
    leaf: Bytes32
    signature: Signature
    traceCid: Cid
    batch: BatchInfo | None = None
    promise: PromisePublic | None = None


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models`` (OpenAI-compatible, plus the protocol's model id)."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(
        default=0, description="Unix seconds OpenAI's shape asks for; 0: not known to the node."
    )
    owned_by: str
    modelId: Bytes32
    taskFee: Uint256


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class AgentCard(BaseModel):
    """One agent a node runs, in ``GET /v1/node``: what to sign (``agentHash``, the hash of
    ``profile``) and what to send."""

    id: str
    codeHash: Bytes32 = Field(description="sha256 of the agent's source bundle.")
    agentHash: Bytes32 | None = Field(
        default=None,
        description="What the request signs: sha256 of the profile's RFC 8785 JSON (code, limits, tools).",
    )
    profile: dict[str, Any] | None = Field(
        default=None,
        description="supernet/agent-profile/v1: the code hash, limits and tools every task of it runs under.",
    )
    description: str = ""
    inputSchema: dict[str, Any] = Field(
        default_factory=dict, description="JSON schema of the task input ({}: any JSON value)."
    )
    package: str | None = Field(
        default=None, description="The entry point it was installed from; null for a built-in agent."
    )


MAX_LISTED_MODELS = 256
"""Most model ids (names, formats) a ``GET /v1/node`` answer lists: a node registers at most
``ServiceManager.MAX_MODELS`` (16 by default), and a client works through what it lists."""
MAX_FORMAT_CHARS = 64
"""Longest compute format name a node may state (the longest known is 15 characters)."""


class ServedFormat(BaseModel):
    """What a served model id is the hash of (`supernet.sdk.models.served_model_id`): the weights
    and the precision they are computed in. A client checks the hash, so the node cannot state
    another precision than the id it asks the user to sign."""

    weights: Bytes32 = Field(description="The weights manifest's id (sha256 of its canonical JSON).")
    compute: Annotated[str, StringConstraints(max_length=MAX_FORMAT_CHARS)] = Field(
        description="Compute format: float32, bfloat16, float16-weights or int8-weights."
    )


class NodeInfo(BaseModel):
    """``GET /v1/node``: what a client needs to sign a request to this node."""

    address: Address
    chainId: int
    verifyingContract: Address
    taskFee: Uint256
    models: Annotated[list[Bytes32], Field(max_length=MAX_LISTED_MODELS)]
    modelNames: Annotated[dict[str, Bytes32], Field(max_length=MAX_LISTED_MODELS)]
    modelFormats: Annotated[dict[Bytes32, ServedFormat], Field(max_length=MAX_LISTED_MODELS)] = Field(
        default_factory=dict,
        description="Model id -> the weights and compute format it is the hash of, for each id in `models`: "
        "a client signs an id only in a format it accepts (bfloat16 only when asked for).",
    )
    agents: dict[str, Bytes32] = Field(
        description="Agent id -> agentHash (its profile's hash: what a request signs), of each agent it runs."
    )
    agentCards: list[AgentCard] = Field(
        default_factory=list, description="Every agent it runs, with its description and input schema."
    )
    storeUrl: str | None = Field(None, description="Content store (Kubo RPC) holding this node's traces.")


class AccountPublic(BaseModel):
    """``GET /v1/accounts/{user}``: the user's nonce and billing state at this node."""

    user: Address
    lastNonce: int
    billed: Uint256
    redeemed: Uint256
    voucher: VoucherBody | None = Field(
        None,
        description="The user's largest voucher of a billed task here (signed by the user): the proof "
        "of `billed` a client without local state checks before signing on top of it.",
    )


class ConfirmationPost(BaseModel):
    """The task user's EIP-712 ``Confirmation(requestHash = task id, actionHash)`` signature."""

    actionHash: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="From `confirmation_required`.")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="65-byte r‖s‖v signature.")


class ConfirmationAccepted(BaseModel):
    """Whether the confirmation resumed a paused call (``false``: a repeat of an accepted one)."""

    taskId: str
    actionHash: str
    resumed: bool


class AuditEntryPublic(BaseModel):
    """One access decision of a task's agent."""

    time: float
    agent: str
    action: str = Field(
        description="`tool`, `memory.read`, `storage.write`, `store.read`, `confirmation.wait`..."
    )
    target: str
    allowed: bool
    reason: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: ``{"error": {"code", "message", ...detail}}``."""

    error: dict[str, Any]
