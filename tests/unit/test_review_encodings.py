# Adversarial review (one value, two encodings): where the same logical value is hashed, signed or
# compared over one encoding in one component and another encoding in another.
"""Adversarial review of value encodings across client, node, validator and contracts.

Each ``test_known_limit_*`` passes while its hole exists: it plays the attack on the real code
paths (RFC 8785 input hashing, the agents' JSON-schema admission, the OpenAI route's signed input,
the kernel's dispatcher and trace recorder, the trace format) and asserts the disagreement. Each
``test_defence_*`` plays an attack the code already defeats and asserts the defence holds.

Only the LLM engine is a stand-in (`_Scheduler`, as in ``tests/unit/test_kernel_recorded_values.py``):
it is not under review, and what matters is what the kernel records around it.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import partial
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from supernet.node.agents.chat import ChatAgent
from supernet.node.agents.registry import AgentInfo
from supernet.node.kernel.access import AccessManager, Capabilities, NodePolicy
from supernet.node.kernel.dispatch import Dispatcher, TaskState
from supernet.node.kernel.syscalls import GenerationOutcome, TaskSpec
from supernet.node.kernel.tools import ToolRegistry
from supernet.node.kernel.trace import TraceRecorder
from supernet.node.llm import SamplingParams
from supernet.node.service.schemas import ChatCompletionCreate
from supernet.sdk.agents.context import AgentContext
from supernet.sdk.agents.input_schema import input_problem
from supernet.sdk.chain.eip712 import (
    Domain,
    TaskRequest,
    Voucher,
    hash_task_request,
    recover_task_request,
    sign_task_request,
    signable,
)
from supernet.sdk.chain.payments import MAX_PACKED_AMOUNT, compact_signature, pack_vouchers
from supernet.sdk.chain.receipts import (
    InputEncodingError,
    Receipt,
    canonical_input,
    input_hash,
    is_normal_input,
    normal_input,
    output_hash,
    trace_hash,
)
from supernet.sdk.chain.signatures import NonCanonicalSignature, require_canonical
from supernet.sdk.formats.binding import input_hash_or_reason, trace_receipt_mismatches
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import Sampling, Trace, example_dag
from supernet.sdk.openai_compat.chat_input import chat_task_input
from supernet.sdk.store.cids import compute_cid, decode_dag, encode_dag

pytestmark = pytest.mark.timeout(30)

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "22" * 20)
MODEL = "0x" + "ab" * 32
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
USER = Account.from_key("0x" + "41" * 32)


# ---------------------------------------------------------------------------------------- helpers


class _Tokenizer:
    def apply_chat_template(self, messages: Any, add_generation_prompt: bool = True) -> list[int]:
        return [7] * 10

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return "x" * len(ids)


class _Engine:
    model_id = MODEL

    def __init__(self) -> None:
        self.tokenizer = _Tokenizer()


class _Scheduler:
    """Stand-in for the engine's scheduler: generates until ``len(output) >= max_new_tokens``, the
    comparison the real engine makes (`LLMEngine`'s finish rule), so a float budget runs as well."""

    def __init__(self) -> None:
        self.budgets: list[Any] = []
        self.tokens_generated = 0

    async def generate(self, job: Any, on_token: Any) -> GenerationOutcome:
        budget = job.params.max_new_tokens
        self.budgets.append(budget)
        out: list[int] = []
        while len(out) < budget:  # the engine's own stop test: `len(seq.output) >= max_new_tokens`
            out.append(5)
        self.tokens_generated += len(out)
        return GenerationOutcome(tuple(out), (-0.5,) * len(out), "length", None, 0)


def _state(task_input: Any) -> TaskState:
    caps = Capabilities(frozenset(), "ns", False, False, 4, 10**6, 512, 4, 1024)
    spec = TaskSpec(task_id="0x" + "01" * 32, agent_id="chat", input=task_input, user="0x" + "02" * 20, fee=0)
    rec = TraceRecorder(spec.task_id, spec.user, 0, "chat", "0x" + "03" * 32, MODEL, task_input)
    return TaskState(spec, AgentInfo("chat", "0x" + "03" * 32, "", ChatAgent), caps, rec, (), 1)


def _dispatcher(sched: _Scheduler) -> Dispatcher:
    return Dispatcher(
        engine=_Engine(),
        scheduler=sched,
        tools=ToolRegistry(),
        memory=None,
        storage=None,
        access=AccessManager(NodePolicy()),
        params_type=SamplingParams,
    )


def _receipt_for(task_input: Any, trace_doc: dict[str, Any]) -> Receipt:
    cid = compute_cid(encode_dag(trace_doc), "dag-cbor")
    return Receipt(
        request_hash=bytes.fromhex(trace_doc["task_id"][2:]),
        user=trace_doc["user"],
        model_id=bytes.fromhex(trace_doc["model_id"][2:]),
        input_hash=input_hash(task_input),
        output_hash=output_hash(trace_doc["output"]),
        trace_hash=trace_hash(cid),
        fee=trace_doc["fee"],
    )


def _request(**over: Any) -> TaskRequest:
    fields: dict[str, Any] = {
        "user": USER.address,
        "node": "0x" + "33" * 20,
        "model_id": b"\x07" * 32,
        "agent_hash": b"\x08" * 32,
        "input_hash": input_hash("hi"),
        "max_fee": 10**15,
        "nonce": 1,
        "deadline": 2**40,
    }
    fields.update(over)
    return TaskRequest(**fields)


# ----------------------------------------------------------------------------------- known limits


async def test_defence_integral_float_budget_runs_as_the_integer() -> None:
    """Attack (a user): ask for ``"max_new_tokens": 8.0`` (or ``max_tokens: 8.0`` on the OpenAI
    route) instead of ``8``. Every admission check reads the value through an encoding where 8.0
    *is* 8: RFC 8785 writes both as ``8`` (one ``inputHash``), JSON Schema's ``integer`` accepts
    8.0, pydantic's lax ``int`` accepts it, and `chat_task_input` copies it "as sent" (a float). The
    chat agent passes it to ``ctx.llm.chat``; the dispatcher's ``min(8.0, caps...)`` keeps the
    float, the engine generates the whole budget (and streams it to the user), and only then the
    trace recorder reads the call's params through the trace format, whose ``max_new_tokens`` is
    an *integer* (`fields.integer` refuses floats): `FormatError`, the call and the task fail.
    Who profits: the user, who gets every token streamed and is never charged (failed tasks are not
    billed, README "A task pays its whole token budget up front"), repeatable at will.
    Impact: free inference / a cheap DoS on any honest node, which spends the model work with no
    receipt. (A float ``seed`` such as 5.0 likewise passes admission and crashes the sampler.)
    """
    signed_int = {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 8}
    signed_float = {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 8.0}
    # one signed hash for both: RFC 8785 writes 8.0 as 8
    assert canonical_input(signed_float) == canonical_input(signed_int)
    assert input_hash(signed_float) == input_hash(signed_int)
    # admission: the agent's published schema accepts it (JSON Schema's integer includes 8.0)
    assert input_problem(ChatAgent.input_schema, signed_float) is None
    # the OpenAI route: the typed view re-types 8.0 to 8, the signed input keeps the float as sent
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8.0}
    assert ChatCompletionCreate.model_validate(body).max_tokens == 8
    via_openai = chat_task_input(json.loads(json.dumps(body)))
    assert isinstance(via_openai["max_new_tokens"], float)
    assert input_problem(ChatAgent.input_schema, via_openai) is None

    # what the float would do past admission: it ran the model, then failed to be recorded
    # (FormatError); now `LLMChat` refuses it where the agent builds the call, before any work
    # (tests/unit/test_review_replay_fidelity.py), and a node never runs it anyway (below)
    sched = _Scheduler()
    st = _state(signed_float)
    dispatcher = _dispatcher(sched)
    ctx = AgentContext.bind(st.spec.task_id, partial(dispatcher.handle, st), ())
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        await ChatAgent().run(ctx, signed_float)
    assert sched.budgets == [] and sched.tokens_generated == 0
    assert st.trace.events == []  # no syscall was made
    # the defence: what a node runs is the normal form, the integer, under the same signed hash
    normal = normal_input(signed_float)
    assert normal == signed_int and type(normal["max_new_tokens"]) is int
    assert input_hash(normal) == input_hash(signed_float) and is_normal_input(normal)
    assert not is_normal_input(signed_float) and not is_normal_input(via_openai)

    # the normal form records fine
    sched_ok = _Scheduler()
    st_ok = _state(normal)
    d_ok = _dispatcher(sched_ok)
    ctx_ok = AgentContext.bind(st_ok.spec.task_id, partial(d_ok.handle, st_ok), ())
    assert await ChatAgent().run(ctx_ok, normal) == "x" * 8
    assert [e["kind"] for e in st_ok.trace.events] == ["llm"]


def test_defence_a_trace_input_must_be_the_value_its_hash_names() -> None:
    """Attack (a node): the user signs ``{"n": 1, "z": 0}``; the node runs the agent on, and
    records in the trace, ``{"n": 1.0, "z": -0.0}`` instead. RFC 8785 writes 1.0 as ``1`` and
    -0.0 as ``0``, so the ``inputHash`` is the same and neither the validator
    (`consistency.check_trace`) nor the user's client (`verify.check_receipt`, both through
    `trace_receipt_mismatches`) reports anything; yet dag-cbor keeps the float type (another trace
    block) and the agent sees another value (``json.dumps``/``str`` give ``1.0`` / ``-0.0``,
    ``isinstance(x, int)`` flips). The replay runs the agent on the trace's input, so it agrees.
    Who profits: a node, which may run the agent on an input the user did not send as long as it
    differs only in number type. Impact: low for the shipped agents (react/retrieval cast with
    ``int()``; chat passes ``temperature``/``top_p`` to arithmetic), but a third-party agent whose
    prompt renders its input, or branches on types, can be steered without any check noticing.

    Defence, by design: a trace's input must be its own normal form (`is_normal_input`, checked in
    `binding.input_hash_or_reason`, which the validator and the client share), so of all the values
    one hash names exactly one may be recorded: the one an honest node runs (`normal_input`).
    """
    sent: dict[str, Any] = {"n": 1, "z": 0}
    swapped: dict[str, Any] = {"n": 1.0, "z": -0.0}
    assert input_hash(sent) == input_hash(swapped)
    assert encode_dag(sent) != encode_dag(swapped)  # two trace encodings of "the signed input"
    assert (
        decode_dag(encode_dag(swapped)) == swapped
        and math.copysign(1, decode_dag(encode_dag(swapped))["z"]) < 0
    )
    assert json.dumps(sent) != json.dumps(swapped)  # what an agent rendering its input shows

    doc = example_dag()
    doc.update(input=swapped, model_id=MODEL)
    doc["events"][0]["model_id"] = MODEL
    receipt = _receipt_for(sent, doc)  # the receipt commits the hash of what the user sent
    trace = Trace.from_dag(decode_dag(encode_dag(doc)))
    assert trace.input == swapped and isinstance(trace.input["n"], float)
    [mismatch] = trace_receipt_mismatches(trace, receipt)  # validator and client alike
    assert mismatch.field == "input hash" and "normal form" in mismatch.claimed
    assert input_hash_or_reason(trace.input) != "0x" + receipt.input_hash.hex()
    # control: the honest node's trace of the same task, the normal form, binds
    doc.update(input=normal_input(swapped))
    honest = Trace.from_dag(decode_dag(encode_dag(doc)))
    assert honest.input == sent and trace_receipt_mismatches(honest, receipt) == []


# --------------------------------------------------------------------------------------- defences


def test_defence_string_input_is_typed() -> None:
    """Attack (a node): the user signs the object ``{"a": 1}``; the node runs the text ``{"a":1}``
    (its canonical JSON spelled as a string) instead. Defence: a string input is encoded as a JSON
    string, so the two have different ``inputHash`` (they used to share one)."""
    obj = {"a": 1}
    spelled = canonical_input(obj).decode()
    assert input_hash(spelled) != input_hash(obj)
    assert canonical_input(spelled) == json.dumps(spelled).encode()


@pytest.mark.parametrize(
    "bad",
    [2**53, -(2**53), 2**64, float("nan"), float("inf"), "a\ud800b", {"k": ["\udfff"]}, {1: "x"}, b"raw"],
)
def test_defence_inputs_without_one_encoding_are_refused(bad: Any) -> None:
    """Attack (a user): an input that JSON, dag-cbor and JavaScript clients would each read
    differently (an integer beyond 2**53, NaN / infinity, a lone surrogate, a non-string key,
    bytes) so that the node's hash, the trace and the validator's recomputation disagree and an
    honest node is accused. Defence: `canonical_input` refuses them (admission's first check), and
    a trace carrying one yields a reason that never equals a hash (a mismatch, not a crash)."""
    with pytest.raises(InputEncodingError):
        canonical_input(bad)
    assert input_hash_or_reason(bad).startswith("no canonical form")


def test_defence_json_escapes_are_one_value_unicode_forms_are_two() -> None:
    """Attack (a user or node): spell the same text two ways on the wire. Defence: JSON escapes
    (``\\u00e9``, a ``\\ud83d\\ude00`` pair) decode to the same string before hashing, so client and
    node agree; NFC and NFD stay two values (no side normalises), and dag-cbor keeps each as is, so
    the trace's input hashes back to exactly what was signed."""
    assert json.loads('"caf\\u00e9 \\ud83d\\ude00"') == json.loads('"café 😀"')
    assert input_hash(json.loads('"caf\\u00e9"')) == input_hash("café")
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert input_hash(nfc) != input_hash(nfd)
    for text in (nfc, nfd):
        assert input_hash(decode_dag(encode_dag({"t": text}))["t"]) == input_hash(text)


def test_defence_output_hash_is_utf8_of_the_recorded_text() -> None:
    """Attack (a node): an output with a lone surrogate, whose 'UTF-8' differs between encoders
    (surrogatepass / replacement), so that user and validator hash different bytes. Defence: the
    output hash refuses it, and dag-cbor (the trace) cannot hold it either."""
    with pytest.raises(UnicodeEncodeError):
        output_hash("ok\ud800")
    with pytest.raises(Exception):  # noqa: B017 - the dag-cbor encoder's own error type
        encode_dag({"output": "ok\ud800"})
    assert output_hash("é") == hashlib.sha256("é".encode()).digest()


def test_defence_eip712_addresses_any_case_one_digest() -> None:
    """Attack (a user): sign with a lowercase / uppercase / wrongly-checksummed address so that the
    node and the contract derive different task ids. Defence: every field is checksummed before
    encoding and EIP-712 hashes the 20-byte value, so the digest is one."""
    lower = _request(user=USER.address.lower(), node=("0x" + "ab" * 20))
    upper = _request(user="0x" + USER.address[2:].upper(), node=("0x" + "AB" * 20))
    assert hash_task_request(lower, DOMAIN) == hash_task_request(upper, DOMAIN)
    assert lower.to_json() == upper.to_json()


def test_defence_eip712_edge_values_match_the_solidity_encoding() -> None:
    """Attack: an edge value (zero, max uint256, zero bytes32) encoded one way in Python and
    another in Solidity's ``hashTaskRequest``. Defence: the Python digest equals the EIP-712
    encoding written out word by word as the contract does (``abi.encode`` of the type hash and
    the eight static fields), and the JSON form round-trips the extremes exactly."""
    top = 2**256 - 1
    req = _request(model_id=b"\x00" * 32, agent_hash=b"\xff" * 32, max_fee=top, nonce=0, deadline=top)
    type_hash = keccak(
        text="TaskRequest(address user,address node,bytes32 modelId,bytes32 agentHash,bytes32 inputHash,"
        "uint256 maxFee,uint256 nonce,uint256 deadline)"
    )
    domain_hash = keccak(
        keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
        + keccak(text="Supernet")
        + keccak(text="1")
        + DOMAIN.chain_id.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(DOMAIN.verifying_contract[2:])
    )

    def word(v: int) -> bytes:
        return v.to_bytes(32, "big")

    struct = keccak(
        type_hash
        + bytes(12)
        + bytes.fromhex(req.user[2:])
        + bytes(12)
        + bytes.fromhex(req.node[2:])
        + req.model_id
        + req.agent_hash
        + req.input_hash
        + word(req.max_fee)
        + word(req.nonce)
        + word(req.deadline)
    )
    assert hash_task_request(req, DOMAIN) == keccak(b"\x19\x01" + domain_hash + struct)
    assert TaskRequest.from_json(req.to_json()) == req
    with pytest.raises(ValueError, match="uint256"):
        TaskRequest.from_json({**req.to_json(), "maxFee": str(2**256)})
    with pytest.raises(ValueError, match="32 bytes"):
        TaskRequest.from_json({**req.to_json(), "modelId": "0x" + "00" * 31})


def test_defence_receipt_leaf_is_abi_words() -> None:
    """Attack: a receipt field encoded differently by the Python leaf and ``ReceiptLib.leaf``
    (address case, max fee). Defence: the leaf is double keccak of seven 32-byte words, the address
    left-padded whatever its case, equal to the word-by-word encoding the contract hashes."""
    top = 2**256 - 1
    a = Receipt(
        b"\x01" * 32, USER.address.lower(), b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, b"\x05" * 32, top
    )
    b = Receipt(b"\x01" * 32, USER.address, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, b"\x05" * 32, top)
    words = b"\x01" * 32 + bytes(12) + bytes.fromhex(USER.address[2:]) + b"\x02" * 32 + b"\x03" * 32
    words += b"\x04" * 32 + b"\x05" * 32 + top.to_bytes(32, "big")
    assert a.leaf() == b.leaf() == keccak(keccak(words))
    assert Receipt.from_json(b.to_json()) == b


def test_defence_voucher_amount_has_one_width() -> None:
    """Attack (a user): sign a voucher whose uint256 amount does not fit the contract's packed
    96-bit field, so the node accepts a voucher the chain would read as a smaller amount (or not
    at all). Defence: `pack_vouchers` refuses it, and admission refuses any amount above
    `MAX_PACKED_AMOUNT` (`Authenticator._check_signatures`)."""
    v = Voucher(user=USER.address, node="0x" + "33" * 20, cumulative_amount=MAX_PACKED_AMOUNT + 1)
    sig = bytes(USER.sign_message(signable(v, DOMAIN)).signature)
    with pytest.raises(ValueError, match="does not fit"):
        pack_vouchers([v], [sig])
    ok = Voucher(user=USER.address, node="0x" + "33" * 20, cumulative_amount=MAX_PACKED_AMOUNT)
    packed = pack_vouchers([ok], [bytes(USER.sign_message(signable(ok, DOMAIN)).signature)])
    assert int.from_bytes(packed[:32], "big") & MAX_PACKED_AMOUNT == MAX_PACKED_AMOUNT


def test_defence_signature_has_one_accepted_form() -> None:
    """Attack (a user or node): the malleable twin (``s' = n - s``, flipped ``v``) or ``v`` in
    0/1, which eth-account accepts and OpenZeppelin refuses, so an off-chain check and the chain
    would judge one signature differently. Defence: `require_canonical` (every SDK recovery) and
    `compact_signature` refuse the high-s twin; a 0/1 ``v`` is refused by recovery too."""
    req = _request()
    sig = sign_task_request(req, DOMAIN, USER)
    assert recover_task_request(req, DOMAIN, sig) == USER.address
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(NonCanonicalSignature):
        recover_task_request(req, DOMAIN, twin)
    with pytest.raises(ValueError):
        compact_signature(twin)
    with pytest.raises(NonCanonicalSignature):
        require_canonical(sig[:64] + bytes([sig[64] - 27]))


def test_defence_trace_request_is_compared_in_one_form() -> None:
    """Attack (a node): record the signed request in the trace with other spellings (lowercase
    addresses, upper-case hex, zero-padded decimals) so that a string comparison and the parsed
    value disagree. Defence: `TaskRequest.from_json` parses and `to_json` re-spells, and
    `check_trace` compares the re-spelled forms, so spelling is never the difference."""
    req = _request()
    spelled = {
        **req.to_json(),
        "user": req.user.lower(),
        "modelId": "0x" + req.model_id.hex().upper(),
        "maxFee": "000" + str(req.max_fee),
    }
    assert TaskRequest.from_json(spelled).to_json() == req.to_json()
    assert hash_task_request(TaskRequest.from_json(spelled), DOMAIN) == hash_task_request(req, DOMAIN)


def test_defence_trace_sampling_params_refuse_float_integers() -> None:
    """The trace format itself holds one encoding of an integer parameter: a float ``seed`` or
    ``max_new_tokens`` (1.0 for 1) is a `FormatError`, so a validator never reads a float budget a
    replay would treat differently (this strictness is what the first known limit trips over)."""
    good: dict[str, Any] = {
        "max_new_tokens": 4,
        "temperature": 0,
        "top_p": 1,
        "seed": 5,
        "stop_token_ids": None,
        "stop": [],
    }
    assert Sampling.from_dag(good, "p").temperature == 0.0
    for key in ("max_new_tokens", "seed"):
        with pytest.raises(FormatError, match="integer"):
            Sampling.from_dag({**good, key: float(good[key])}, "p")
    assert to_checksum_address(USER.address.lower()) == USER.address


def test_defence_a_receipt_has_one_json_form() -> None:
    """Attack (a node): publish a receipt whose JSON spells a hash short (``"modelId": "0x"``, which
    the ABI encoding zero-pads into the same leaf) or the fee as ``true`` / ``"1_000"`` / ``10.9``
    (which ``int()`` read), so that one leaf has several JSON forms and any comparison made on the
    JSON (a client's, an indexer's) can be split. Defence: `Receipt.from_json` reads only what
    `to_json` writes: 32-byte ``0x`` hex and a decimal uint256."""
    user = to_checksum_address("0x" + "ab" * 20)  # as to_json writes it
    receipt = Receipt(b"\x01" * 32, user, bytes(32), b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, 1000)
    doc = receipt.to_json()
    assert Receipt.from_json(doc) == receipt
    assert Receipt.from_json({**doc, "fee": 1000}) == receipt  # an integer is the same value
    for key, bad in (
        ("modelId", "0x"),
        ("modelId", "0x" + "00" * 31),
        ("inputHash", "02" * 32),
        ("outputHash", "0x" + "03" * 33),
        ("fee", True),
        ("fee", "1_000"),
        ("fee", 10.9),
        ("fee", "-1"),
        ("fee", str(2**256)),
        ("fee", "١٠٠٠"),  # Arabic-Indic digits: str.isdigit() alone would take them
    ):
        with pytest.raises(ValueError):
            Receipt.from_json({**doc, key: bad})
