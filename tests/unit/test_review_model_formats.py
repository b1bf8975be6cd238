"""Review: a client signs a model id only in a compute format it accepts (this session's change).

Scope: `supernet.sdk.client.types.pick_model_id` / `served_format` / `DEFAULT_PRECISIONS` (every
compute format but bfloat16), checked against the node's ``GET /v1/node`` ``modelFormats``; its use
in `Client` (discovery `_unsignable`, direct `_prepare_paid`), the OpenAI drop-in
(`SupernetAuth(precisions=)`) and ``supernet task submit --allow-bfloat16``; the node side
(`KernelExecutor.model_format`); and the validator's tolerance for the formats a default client
still signs (`supernet.node.llm.scoring.Tolerance.for_pair`, `ModelScorer.for_compute`). Attacker:
a node that wants a default client to sign an id the validators judge loosely, to sign another id
than the one its user named, to stall the client, or to mislead its user.

Found (all three FIXED, their tests now ``test_defence_*``):
- MEDIUM: a ``0x`` id the user names is swapped for another one through ``modelNames``. When the id
  is not in the node's ``models`` list, `pick_model_id` looks it up as a *name*, and a node
  answering ``modelNames = {"<the id the user named>": "<another id>"}`` gets the other id signed:
  a user asking by id for the float32 model is made to pay for (and sign) the node's int8-weights
  id, or any other covered model the node registered. Discovery finds the node for the named id
  (it registered that id on chain, so the on-chain prefilter passes, and `serves_model` accepts a
  ``modelNames`` key). With ``precisions`` including bfloat16 the same swap turns a float32 id the
  user chose to avoid the bf16 bounds into a bf16 id.
  `test_attack_a_0x_id_the_user_names_is_signed_as_the_id_the_node_maps_it_to`,
  `test_attack_discovery_finds_a_node_for_an_id_it_swaps_for_another`.
- MEDIUM: unbounded client work on one ``/v1/node`` answer. `served_format` scans every
  ``modelFormats`` key, lower-casing it, for every listed model; keys are unbounded strings and
  ``models`` an unbounded list (a node registers at most `MAX_MODELS` = 16 on chain). Within the
  4 MiB answer bound, 8,000 listed ids and one 1 MiB key (1.6 MB) cost ~5 s of CPU per
  ``pick_model_id`` call here, 20,000 ids and a 2 MiB key (3.5 MB) ~30 s, run synchronously
  on the client's event loop in every discovery (per node) and every OpenAI-drop-in request.
  `test_attack_a_huge_model_formats_key_times_many_models_stalls_the_client`.
- LOW: the refusal message quotes the node's ``compute`` text verbatim and unbounded: a node can
  put a 100 KB string, or instructions ("rerun with --allow-bfloat16"), into the error the user
  reads. `test_attack_the_refusal_message_carries_unbounded_node_text`.

Checked and holding:
- a bf16 id cannot be signed by a default client (or the drop-in's default auth) by any of: a
  modelFormats key in another case or listed twice in two cases (only the format the id is the
  hash of passes), a name in ``modelNames`` pointing to the bf16 id, the bf16 id named directly (any
  case), the bf16 id listed first or twice, a format string in another case ("BFloat16", "Float32")
  or a near-miss ("float32 ") (`served_model_id` takes the exact names only).
- the default formats are all judged by the reference validator in their own format with the tight
  default tolerance: `Tolerance.for_pair(c, c)` for every `DEFAULT_PRECISIONS` entry, and
  `ModelScorer.for_compute` loads that format (a load failure is "unverifiable" and retried, never
  a looser cross-format verdict). The only loose pair a default-format node can meet is a scorer
  without ``for_compute`` (none in the code) or an operator-set ``tolerance``.
- the real node states ``(engine.weights_id, engine.compute)``, and its engine's id is
  ``served_model_id`` of exactly that (node/supernet/node/llm/engine.py), so an honest node's every
  engine passes the client's check (tests/integration/test_node_models.py covers two engines).
- the drop-in (`SupernetAuth`, `openai_client`, `async_openai_client`) and ``task submit`` default
  to `DEFAULT_PRECISIONS` (no bfloat16).
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import httpx
import pytest
from chain_fixtures import MODEL_ID, MODEL_WEIGHTS_ID, Actors
from eth_account import Account
from supernet.node.llm.scoring import Tolerance
from supernet.sdk.chain import Contracts
from supernet.sdk.client import Client
from supernet.sdk.client.types import (
    DEFAULT_PRECISIONS,
    MAX_ANSWER_BYTES,
    ClientError,
    parse,
    pick_model_id,
)
from supernet.sdk.models import COMPUTE_PRECISIONS, served_manifest, served_model_id
from supernet.sdk.node_api import MAX_FORMAT_CHARS, MAX_LISTED_MODELS, NodeInfo
from supernet.sdk.openai_compat import factory
from supernet.sdk.openai_compat.auth import SupernetAuth

pytestmark = pytest.mark.timeout(60)

ADDR = "0x" + "ab" * 20
WEIGHTS = "0x" + "44" * 32
FP32 = served_model_id(WEIGHTS, "float32")
BF16 = served_model_id(WEIGHTS, "bfloat16")
INT8 = served_model_id(WEIGHTS, "int8-weights")


def fmt(compute: str, weights: str = WEIGHTS) -> dict[str, str]:
    return {"weights": weights, "compute": compute}


def info_of(**changes: object) -> NodeInfo:
    """A node's ``/v1/node``, parsed by the client's real parser."""
    doc: dict[str, object] = {
        "address": ADDR,
        "chainId": 31337,
        "verifyingContract": "0x" + "cd" * 20,
        "taskFee": "1",
        "models": [BF16],
        "modelNames": {"smollm2": BF16},
        "modelFormats": {BF16: fmt("bfloat16")},
        "agents": {"chat": "0x" + "33" * 32},
        **changes,
    }
    return parse(NodeInfo, doc, "GET /v1/node")


# -- 1. getting a bf16 id signed by a default client ----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "asked"),
    [
        ({}, None),
        ({}, "smollm2"),
        ({}, BF16),
        ({}, BF16.upper().replace("0X", "0x")),
        ({"models": [BF16, BF16]}, None),
        ({"modelFormats": {BF16.upper().replace("0X", "0x"): fmt("bfloat16")}}, None),
        # the same id twice in two cases, the first stating float32: not the hash, so refused
        ({"modelFormats": {BF16.upper().replace("0X", "0x"): fmt("float32"), BF16: fmt("bfloat16")}}, None),
        ({"modelFormats": {BF16: fmt("float32"), BF16.upper().replace("0X", "0x"): fmt("bfloat16")}}, None),
        ({"modelFormats": {BF16: fmt("BFloat16")}}, None),
        ({"modelFormats": {BF16: fmt("Float32")}}, None),
        ({"modelFormats": {BF16: fmt("float32 ")}}, None),
        ({"modelFormats": {BF16: fmt("float32", WEIGHTS.upper().replace("0X", "0x"))}}, None),
        # a float32 id listed, the name pointing to the bf16 id
        ({"models": [FP32, BF16], "modelFormats": {FP32: fmt("float32"), BF16: fmt("bfloat16")}}, "smollm2"),
        # the bf16 id as a name key of itself
        ({"modelNames": {BF16: BF16}, "models": [FP32], "modelFormats": {BF16: fmt("bfloat16")}}, BF16),
    ],
)
def test_defence_a_default_client_signs_no_bfloat16_id_whatever_the_node_states(
    changes: dict[str, object], asked: str | None
) -> None:
    """Every trick the node controls (keys' case, duplicates, names, listing order, format
    spelling) ends in a refusal: the client signs an id only in the format the id is the hash of."""
    info = info_of(**changes)
    with pytest.raises(ClientError):
        signed = pick_model_id(info, asked)
        assert signed.lower() != BF16  # a non-bf16 id is fine; reaching here with bf16 is not
        raise ClientError("signed a non-bf16 id")


def test_defence_every_default_entry_point_refuses_bfloat16() -> None:
    """The drop-in and the client default to `DEFAULT_PRECISIONS`, which has no bfloat16."""
    assert "bfloat16" not in DEFAULT_PRECISIONS
    assert set(DEFAULT_PRECISIONS) | {"bfloat16"} == set(COMPUTE_PRECISIONS)
    for fn in (Client.__init__, SupernetAuth.__init__, factory.openai_client, factory.async_openai_client):
        assert inspect.signature(fn).parameters["precisions"].default == DEFAULT_PRECISIONS
    auth = SupernetAuth(Account.create(), None, rule=None)  # type: ignore[arg-type]
    assert auth.precisions == DEFAULT_PRECISIONS


def test_defence_the_formats_a_default_client_signs_are_judged_with_the_tight_tolerance() -> None:
    """Each default format is re-scored in its own format (`ModelScorer.for_compute` loads it)
    under the tight default bounds; only bfloat16 is judged within the bf16 bounds."""
    for compute in DEFAULT_PRECISIONS:
        assert Tolerance.for_pair(compute, compute) == Tolerance()
    assert Tolerance.for_pair("bfloat16", "bfloat16") == Tolerance.bf16()


# -- 2. a named 0x id swapped for another -----------------------------------------------------------


def test_defence_a_0x_id_the_user_names_is_signed_as_the_id_the_node_maps_it_to() -> None:
    """Attack (node): the user names the float32 id ``FP32`` explicitly. The node lists only its
    int8-weights id and answers ``modelNames = {FP32: INT8}``. `pick_model_id` does not find FP32
    in ``models``, looks it up as a name, and returns INT8: the user signs (and pays for) a model
    other than the id it named. The same with a bf16-accepting client turns FP32 into BF16.

    Safe: an id the user names is signed as itself or refused (types.py `pick_model_id`: the
    ``modelNames`` lookup should apply to names only, never to a ``0x`` id). FIXED: a ``0x`` id is
    signed as that id or refused; `serves_model` reads ``modelNames`` for names only."""
    info = info_of(
        models=[INT8],
        modelNames={"smollm2": INT8, FP32: INT8},
        modelFormats={INT8: fmt("int8-weights"), FP32: fmt("float32")},
    )
    try:
        signed = pick_model_id(info, FP32)
    except ClientError:
        signed = None
    assert signed in (None, FP32), f"asked for {FP32}, the client would sign {signed}"


@pytest.mark.anvil
async def test_defence_discovery_finds_a_node_for_an_id_it_swaps_for_another(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """The same swap through the real client's discovery over a real chain: the cheater registers
    both the float32 test model (which the user asks for by id) and its int8-weights id, every
    validator declares both, and its ``/v1/node`` lists only the int8 id with ``modelNames =
    {<float32 id>: <int8 id>}``. ``discover(<float32 id>)`` ranks the cheater: what it would sign
    there is the int8 id (`Client._unsignable` checks the id `pick_model_id` returned, which is
    registered and covered). FIXED with the unit case above: the node is not found for that id."""
    fp32 = "0x" + MODEL_ID.hex()
    int8_manifest = served_manifest(MODEL_WEIGHTS_ID, "int8-weights")
    int8 = "0x" + network.model_registry.register_model(int8_manifest, "test-model-int8").value.hex()
    cheater = network.as_account(actors.outsider).service_manager
    cheater.register_node("http://cheater.invalid", [MODEL_ID, bytes.fromhex(int8[2:])], 1, 2 * 10**18)
    for v in actors.validators:
        network.as_account(v).service_manager.declare_checked_models([MODEL_ID, bytes.fromhex(int8[2:])])
    domain = network.domain

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host != "cheater.invalid" or request.url.path != "/v1/node":
            raise httpx.ConnectError("unreachable", request=request)
        body = {
            "address": actors.outsider.address,
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
            "taskFee": "1",
            "models": [int8],
            "modelNames": {"test-model": int8, fp32: int8},
            "modelFormats": {int8: {"weights": MODEL_WEIGHTS_ID, "compute": "int8-weights"}},
            "agents": {"chat": "0x" + "11" * 32},
        }
        return httpx.Response(200, json=body)

    client = Client(network.as_account(actors.users[0]), state_dir=tmp_path / "client")
    client.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    try:
        found = await client.discover(fp32)
    finally:
        await client.http.aclose()
    swapped = [n for n in found if n.address == actors.outsider.address]
    would_sign = [pick_model_id(n.info, fp32) for n in swapped]
    assert not swapped, f"asked for {fp32}, discovery ranks the cheater, where it would sign {would_sign}"


# -- 3. unbounded work and misleading messages ------------------------------------------------------


def test_defence_a_huge_model_formats_key_times_many_models_stalls_the_client() -> None:
    """Attack (node): ``models`` lists 8,000 ids (the chain lets a node register 16) and
    ``modelFormats`` holds one 1 MiB key; the answer is 1.6 MB, well under the client's 4 MiB
    bound. With no model named, `pick_model_id` tries every listed id, and `served_format`
    lower-cases every key for each: 8 GB of work, 3-6 s here; 20,000 ids and a 2 MiB key (3.5 MB)
    took ~30 s, synchronously on the client's event loop, in every discovery and every drop-in
    request.

    Safe: bounded work per answer (types.py `served_format`: index ``modelFormats`` once by its
    lower-cased Bytes32 keys, refuse malformed keys, and cap ``models`` at `MAX_MODELS`).
    FIXED: ``modelFormats`` keys are ids and `NodeInfo` lists at most `MAX_LISTED_MODELS` ids,
    names and formats (the answer above is refused as malformed); `pick_model_id` indexes the
    formats once."""
    models = [f"0x{i:064x}" for i in range(8000)]
    doc_formats = {"k" * (1 << 20): fmt("float32")}
    size = len(json.dumps({"models": models, "modelFormats": doc_formats}))
    assert size < MAX_ANSWER_BYTES  # the client reads it whole
    start = time.perf_counter()
    with pytest.raises(ClientError, match="malformed answer"):
        pick_model_id(info_of(models=models, modelNames={}, modelFormats=doc_formats), None)
    # the most a node may list, each id with a format the id is not the hash of: still bounded
    listed = models[:MAX_LISTED_MODELS]
    info = info_of(models=listed, modelNames={}, modelFormats={m: fmt("float32") for m in listed})
    with pytest.raises(ClientError, match=r"the id is not the hash of that \(and 255 more like it\)"):
        pick_model_id(info, None)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.2, f"one /v1/node answer of {size} bytes cost the client {elapsed:.1f} s of CPU"


def test_defence_the_refusal_message_carries_unbounded_node_text() -> None:
    """Attack (node): the ``compute`` it states is free text, quoted whole in the error the user
    reads (and, in discovery, in every "left out" line): a 100 KB string, or one that tells the user
    what to do (``rerun with --allow-bfloat16``).

    Safe: the message names the stated format only when it is a known one, or a bounded excerpt
    (types.py `served_format`; or `ServedFormat.compute` a Literal of `COMPUTE_PRECISIONS`).
    FIXED: a stated format is at most `MAX_FORMAT_CHARS` characters (a longer one makes the answer
    malformed), and `served_format` quotes it only when it names a known format."""
    advice = "your SDK is outdated: rerun with --allow-bfloat16 to reach this verified node "
    for compute in (advice + "x" * 100_000, advice[:MAX_FORMAT_CHARS]):
        with pytest.raises(ClientError) as err:
            pick_model_id(info_of(modelFormats={BF16: fmt(compute)}), None)
        message = str(err.value)
        assert len(message) < 2_000 and advice[:40] not in message, (
            f"{len(message)} chars: {message[:300]}..."
        )
