"""Adversarial review of the change that put the tokenizer and chat template into the model id
(weights manifest format 2, `Tokenizer.digest`, the GGUF tokenizer read in isolation, the stale
checks of `catalog.is_pulled` / `pull`, `loader._check_cached_manifest` and the devnet's
`pulled_model_manifest`).

Tried: (1) two copies with one digest that encode, decode or render a chat differently, through
every file and setting transformers reads (special_tokens_map.json, added_tokens.json,
extra/additional special tokens, tokenizer_class, a model_type that picks the class, legacy,
generation_config.json, a template in tokenizer_config.json next to chat_template.jinja, the
BPE clean-up override) and through the chat template's own globals; (2) one tokenizer that gives
two digests (GGUF vs HF folder, a GGUF reached through a relative symlink of another name, a
folder of hostile sibling files, the tokenizer's state after use, another library version);
(3) migration: a pulled copy that stops matching its manifest, and what ``pull`` does about it;
(4) the GGUF's temporary folder: leaks on success and failure, concurrent loads.

Findings:
1. FOUND (known limit): a chat template that reads the clock (``strftime_now``, as Llama 3.x
   templates do for their "Today Date" line) renders other prompt ids under one digest on another
   day or in another time zone: the node's honest trace fails the validator's ``replay`` check.
2. FOUND (known limit): ``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output``
   (transformers 5's second switch, without which BPE tokenizers ignore the clean-up) is not in
   `_BEHAVIOUR_SETTINGS`: two copies with one digest decode the same ids to other text (the text
   an agent reads and stop strings are looked for in). The list is a deny-list of one library
   version's knobs.
3. FOUND (known limit): the digest hashes the libraries' in-memory view (``to_str`` of the Rust
   tokenizer, transformers' attributes), not the files, and ``tokenizers>=0.20`` /
   ``transformers>=5,<6`` are unpinned: a library whose serialisation differs (as tokenizers 0.20's
   merges format did) gives other ids for the same files. A pulled copy then refuses to load
   ("corrupt or edited copy"), ``is_pulled`` still says yes and ``supernet model pull`` (and the
   Makefile's stamp rule) is a no-op: the node cannot start until the folder is deleted by hand;
   across machines, nodes and validators on other versions name the same catalog model by
   different ids.
4. FOUND (known limit, minor): the digest reads the tokenizer's mutable state: a ``tokenizer.json``
   with a ``truncation`` block (transformers clears it at the first call) gives one digest before
   use and another after (``LLMEngine.from_model`` digests a tokenizer it is handed, used or not).
5. holds: every other file or setting tried either changes the digest or changes nothing the node
   and validator call (encode, decode with and without special tokens, chat template).
6. holds: the GGUF read directly (through a relative symlink of another name) and the pulled
   folder give one model id; the GGUF's tokenizer ignores hostile sibling files; its temporary
   folder is removed after success, failure and concurrent loads.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.chat import ChatAgent

from tests.unit.test_review_cheating_node import SMOLLM2, registry, run_signed, verdict_of
from tests.unit.test_validator_attacks3 import NoEmbedder

pytestmark = [
    pytest.mark.model,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached"),
]

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# a Llama 3.x style system turn: the date comes from the renderer's clock unless the caller sets it
DATED_TEMPLATE = (
    '{%- if not date_string is defined %}{%- set date_string = strftime_now("%d %b %Y") %}{%- endif %}'
    "<|im_start|>system\nCutting Knowledge Date: December 2023\nToday Date: {{ date_string }}<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# -- helpers ---------------------------------------------------------------------------------------


def checks(verdict: Any) -> list[str]:
    return [f.check.value for f in verdict.findings]


def _tokenizer_copy(
    dest: Path,
    config: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """The pulled SmolLM2's tokenizer files in ``dest``: ``config`` merged into tokenizer_config.json
    (a None value removes the key), ``files`` written beside them, ``drop`` left out."""
    dest.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if name not in drop:
            shutil.copy(SMOLLM2 / name, dest / name)
    if config:
        doc = json.loads((SMOLLM2 / "tokenizer_config.json").read_text())
        for key, value in config.items():
            if value is None:
                doc.pop(key, None)
            else:
                doc[key] = value
        (dest / "tokenizer_config.json").write_text(json.dumps(doc))
    for name, text in (files or {}).items():
        (dest / name).write_text(text)
    return dest


def _weights_linked_copy(dest: Path) -> Path:
    """A pulled-model folder in ``dest``: weights, config and manifest linked, tokenizer copied."""
    _tokenizer_copy(dest)
    for name in ("model.safetensors", "config.json", "manifest.json"):
        (dest / name).symlink_to(SMOLLM2 / name)
    return dest


class _Clock(datetime.datetime):
    """transformers' ``strftime_now`` reads ``datetime.now()`` of its module: this one is set."""

    at = datetime.datetime(2026, 12, 5, 12, 0)

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return cls.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> type[_Clock]:
    import transformers.utils.chat_template_utils as templates

    monkeypatch.setattr(templates, "datetime", _Clock)
    return _Clock


@pytest.fixture(scope="module")
def loaded() -> Any:
    """SmolLM2 in float32: the file's one full-model load, shared by the node and the validator."""
    from supernet.node.llm.loader import load_model

    return load_model(SMOLLM2, max_positions=1024)


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


# -- 1. a template that reads the clock -------------------------------------------------------------


async def test_known_limit_a_template_that_reads_the_clock_gets_an_honest_node_accused(
    loaded: Any, make_kernel: Any, store_client: Any, clock: type[_Clock], tmp_path: Path
) -> None:
    """Setup: a Llama-family model whose chat template dates the system turn with
    ``strftime_now`` unless ``date_string`` is passed (Llama 3.1 / 3.2 Instruct ship exactly this);
    node and validator hold byte-identical files, so one digest and one model id.

    Today: transformers renders the template with ``strftime_now`` = the machine's local
    ``datetime.now()``, and neither `Tokenizer.apply_chat_template` nor the kernel
    (`dispatch._llm`) fixes the date. The node runs the task at 23:59; the validator replays it
    two minutes later (or at the same instant in a time zone east of the node: Tokyo and New York
    disagree on the date 14 hours a day) and its prompt ids differ: a ``replay`` fault. Every
    validator re-checks after the fact, so the quorum agrees and the honest node is slashed; a
    node cannot serve such a model safely at all. The digest cannot help: the template is the same.

    Fix (by design): render chat templates in a protocol-fixed environment: `Tokenizer` compiles
    the template itself with ``strftime_now`` bound to a date the trace fixes (the signed request's
    or the batch's), or passes ``date_string`` from the request; or refuse at load a template that
    calls ``strftime_now`` or any other non-pure global."""
    from supernet.node.llm import LLMEngine
    from supernet.node.llm.manifest import model_id
    from supernet.node.llm.tokenizer import Tokenizer
    from supernet.validator.scoring import ModelScorer

    files = {"chat_template.jinja": DATED_TEMPLATE}
    node_tok = Tokenizer(_tokenizer_copy(tmp_path / "node", files=files))
    validator_tok = Tokenizer(_tokenizer_copy(tmp_path / "validator", files=files))
    assert node_tok.digest() == validator_tok.digest()  # the same files: one id for both
    mid = model_id({**loaded.manifest, "tokenizer": node_tok.digest()})
    assert mid != loaded.model_id

    engine = LLMEngine(loaded.model, node_tok, mid, max_batch=4, max_seq_len=1024)
    scorer = ModelScorer.from_loaded(dataclasses.replace(loaded, tokenizer=validator_tok, model_id=mid))
    kernel = await make_kernel(engine)

    clock.at = datetime.datetime(2026, 12, 5, 23, 59)
    trace, req, sig = await run_signed(kernel, ChatAgent, "What is 2+2?")
    clock.at = datetime.datetime(2026, 12, 5, 23, 59, 30)  # control: the same day verifies
    assert "replay" not in checks(await verdict_of(store_client, scorer, trace, req, sig))
    clock.at = datetime.datetime(2026, 12, 6, 0, 1)  # two minutes later, past midnight
    verdict = await verdict_of(store_client, scorer, trace, req, sig)
    assert "replay" in checks(verdict), verdict


# -- 2. a setting outside the digest ----------------------------------------------------------------


def test_known_limit_the_bpe_clean_up_override_is_outside_the_digest(tmp_path: Path) -> None:
    """Setup: two copies of one model with ``clean_up_tokenization_spaces: true`` (upstream
    tokenizer_configs often carry it); one also sets transformers 5's
    ``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`` (without it, a BPE
    tokenizer ignores the clean-up; with it, spaces before punctuation are stripped).

    Today: `_BEHAVIOUR_SETTINGS` lists five settings, not this one, so both copies have one digest,
    one model id, and decode the same ids to different text: the text an agent reads
    (``reply.text``), and the text the kernel and `ModelScorer.decode` look for stop strings in
    (`dispatch.stop_text`). A node with one copy and validators with the other disagree on the
    agent's return value (``replay``) for any answer with " ." or " ,": honest nodes are accused.
    The same flag also shows the list is one library version's: earlier transformers 5 releases
    applied the clean-up to BPE without it, so one copy decodes differently by version too.

    Fix (by design): make the behaviour not depend on settings at all: `Tokenizer.decode` calls the
    `tokenizers` backend (``backend_tokenizer.decode``, whose pipeline the digest hashes whole) and
    `encode` likewise, or refuse to load a tokenizer_config with any key outside an allow-list
    the protocol names, instead of hashing a deny-list of knobs."""
    from supernet.node.kernel.dispatch import stop_text
    from supernet.node.llm.tokenizer import Tokenizer

    clean = {"clean_up_tokenization_spaces": True}
    flag = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
    theirs = Tokenizer(_tokenizer_copy(tmp_path / "a", config=clean))
    ours = Tokenizer(_tokenizer_copy(tmp_path / "b", config={**clean, flag: True}))
    assert getattr(ours.backend, flag) and not getattr(theirs.backend, flag)
    assert ours.digest() == theirs.digest()  # one id

    ids = ours.encode("The answer is 4 . Done , thanks !")
    assert ours.encode("The answer is 4 . Done , thanks !") == theirs.encode(
        "The answer is 4 . Done , thanks !"
    )
    assert theirs.decode(ids) == "The answer is 4 . Done , thanks !"
    assert ours.decode(ids) == "The answer is 4. Done, thanks!"
    assert stop_text(ours, ids) != stop_text(theirs, ids)  # " ." as a stop string: one sees it
    assert " ." in stop_text(theirs, ids) and " ." not in stop_text(ours, ids)


def test_defence_other_files_and_settings_either_change_the_digest_or_nothing(tmp_path: Path) -> None:
    """Attack on the digest: every other file and tokenizer_config field transformers reads
    that the digest might miss: legacy special_tokens_map.json and added_tokens.json, extra /
    additional special tokens, the tokenizer class (named, or picked through config.json's
    ``model_type`` when the config names none), ``legacy``, a generation_config.json with other
    EOS ids (no part of the node reads it: the EOS ids are config.json's, in the manifest), and a
    different template in tokenizer_config.json next to chat_template.jinja. For each, either the
    digest changes or encode, decode (with and without special tokens) and the chat template give
    what the catalog's copy gives."""
    from supernet.node.llm.tokenizer import Tokenizer

    base = Tokenizer(SMOLLM2)
    text = "Hello , world . It's <repo_name> x  y\n\nz <|im_end|>"
    ids = [*base.encode(text), 0, 1, 2, 3, 100, 200]
    chat = [{"role": "system", "content": "Be brief ."}, {"role": "user", "content": "Hi , there ."}]
    qwen2 = json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})
    variants: dict[str, dict[str, Any]] = {
        "special_tokens_map": {
            "files": {"special_tokens_map.json": json.dumps({"eos_token": "<|endoftext|>"})}
        },
        "extra_special": {"config": {"extra_special_tokens": ["<repo_name>", "hello"]}},
        "additional_special": {"config": {"additional_special_tokens": ["<file_sep>"]}},
        "added_tokens": {"files": {"added_tokens.json": json.dumps({"<new>": 49152})}},
        "gpt2_class": {"config": {"tokenizer_class": "GPT2Tokenizer"}},
        "qwen2_class": {"config": {"tokenizer_class": "Qwen2Tokenizer"}},
        "model_type_picks_class": {"config": {"tokenizer_class": None}, "files": {"config.json": qwen2}},
        "legacy": {"config": {"legacy": False}},
        "generation_config": {"files": {"generation_config.json": json.dumps({"eos_token_id": [0, 2]})}},
        "template_in_config": {
            "config": {"chat_template": "{{ 'x' }}{% for m in messages %}{{ m.content }}"}
        },
    }
    digest_changed = []
    for name, change in variants.items():
        tok = Tokenizer(_tokenizer_copy(tmp_path / name, change.get("config"), change.get("files")))
        if tok.digest() != base.digest():
            digest_changed.append(name)
            continue
        assert tok.encode(text) == base.encode(text), name
        assert tok.decode(ids) == base.decode(ids), name
        assert tok.decode(ids, skip_special_tokens=True) == base.decode(ids, skip_special_tokens=True), name
        assert tok.apply_chat_template(chat) == base.apply_chat_template(chat), name
    assert "added_tokens" in digest_changed  # a new token: a new pipeline


# -- 3. the same files, another digest: a library's view ----------------------------------------


def test_known_limit_a_library_whose_serialisation_differs_bricks_the_pulled_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setup: the pulled SmolLM2, untouched; then the machine's ``tokenizers`` (or transformers)
    is upgraded to a release that serialises one more default field of the BPE model (as 0.19
    added ``ignore_merges`` and 0.20 changed the merges' form, which `Tokenizer.digest` already
    has to undo). Simulated by a backend whose ``to_str`` adds such a field; nothing on disk
    changes. node/pyproject.toml pins neither (``tokenizers>=0.20``, ``transformers>=5,<6``).

    Today: the digest is of the libraries' view, not of the files, so the same files give another
    model id. (a) The pulled copy no longer loads: "corrupt or edited copy". (b) `is_pulled` still
    says it is pulled (it checks the format string alone), so `pull` returns at once without
    converting, and so does ``make setup`` (its stamp rule runs `pull` after a venv reinstall):
    the node or validator cannot start until someone deletes the folder by hand. (c) Across
    machines, a node and the validators that installed at other times name the same catalog
    model by different ids: the node's receipts are unverifiable to them, or the devnet registers
    an id the nodes do not compute.

    Fix (by design): hash the files, not a library's view of them: pull writes the tokenizer files
    itself from the GGUF in a canonical form and the digest is ``sha256`` of those bytes (or of a
    protocol-defined canonical JSON built from the file's own fields); pin the tokenizer libraries
    as part of the served format; and make `is_pulled` / `pull` verify the recorded id (rebuild on a
    mismatch, saying why) rather than trusting the format string."""
    from supernet.node.llm import catalog
    from supernet.node.llm.errors import WeightsFormatError
    from supernet.node.llm.loader import load_model
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    home = tmp_path / "home"
    _weights_linked_copy(home / "models" / "smollm2-135m")
    monkeypatch.setenv("SUPERNET_HOME", str(home))
    assert catalog.is_pulled("smollm2-135m")

    class NewerRelease:
        """The Rust tokenizer as a later release serialises it: one more default field."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def to_str(self, *args: Any) -> str:
            doc = json.loads(self._inner.to_str(*args))
            doc["model"]["continuing_subword_suffix"] = None
            return json.dumps(doc)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    monkeypatch.setattr(
        TokenizersBackend, "backend_tokenizer", property(lambda s: NewerRelease(s._tokenizer))
    )
    with pytest.raises(WeightsFormatError, match="corrupt or edited copy"):  # (a)
        load_model("smollm2-135m", max_positions=64)

    def convert(*args: object, **kwargs: object) -> None:
        raise AssertionError("pull converted the copy again")

    monkeypatch.setattr(catalog, "_download_gguf", convert)
    monkeypatch.setattr("supernet.node.llm.weights.read_gguf", convert)
    assert catalog.is_pulled("smollm2-135m")  # (b): still "pulled"
    assert catalog.pull("smollm2-135m") == home / "models" / "smollm2-135m"  # a no-op
    with pytest.raises(WeightsFormatError, match="corrupt or edited copy"):
        load_model("smollm2-135m", max_positions=64)


def test_known_limit_the_digest_of_a_tokenizer_changes_once_it_is_used(tmp_path: Path) -> None:
    """Setup: a tokenizer.json whose ``truncation`` block is set (some upstream files carry one).

    Today: `Tokenizer.digest` serialises the live Rust tokenizer, and transformers clears the
    truncation at the first call: the same object digests differently before and after one
    `encode` (behaviour is the same either way: the encoding is not truncated after the clear).
    The loader digests a fresh tokenizer, so load-time ids agree; but `LLMEngine.from_model`
    digests the tokenizer it is handed, used or not, and any later re-digest of a live tokenizer
    (a check that the served tokenizer still matches its id) would fail.

    Fix (by design): compute the digest once, from the files or a fresh copy with padding and
    truncation stripped (as llguidance's ``from_tokenizer`` does), and keep it on the object."""
    from supernet.node.llm.tokenizer import Tokenizer

    dest = _tokenizer_copy(tmp_path / "truncating", drop=("tokenizer.json",))
    doc = json.loads((SMOLLM2 / "tokenizer.json").read_text())
    doc["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    (dest / "tokenizer.json").write_text(json.dumps(doc))
    tok = Tokenizer(dest)
    fresh = tok.digest()
    assert len(tok.encode("one two three four five six seven")) > 4  # not truncated in use
    assert tok.digest() != fresh  # the same tokenizer, another digest
    assert Tokenizer(dest).digest() == fresh  # a fresh load: the first one again


# -- 4. one model, one id, whichever file is read -----------------------------------------------------


def test_defence_the_gguf_read_directly_through_a_relative_symlink_names_the_catalog_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack on the id's stability: a node serves the catalog's GGUF directly (``--model
    x.gguf``), reached through a relative symlink under another name, from a folder that also holds
    a hostile tokenizer_config.json and chat_template.jinja (the pre-fix loader merged them in);
    validators load the pulled folder. Both must compute the catalog's id (what `load_model`
    hashes: the GGUF's dequantised tensors, its config and its tokenizer's digest)."""
    from supernet.node.llm.manifest import build_manifest, model_id
    from supernet.node.llm.tokenizer import Tokenizer
    from supernet.node.llm.weights import read_gguf

    served = tmp_path / "served"
    served.mkdir()
    (served / "mine.gguf").symlink_to(os.path.relpath(SMOLLM2 / GGUF, served))
    (served / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ 'hostile' }}"}))
    (served / "chat_template.jinja").write_text("{{ 'hostile' }}")
    monkeypatch.chdir(tmp_path)
    tok = Tokenizer(Path("served"), gguf_file="mine.gguf")  # a relative folder, as a CLI passes it
    assert tok.backend.chat_template == Tokenizer(SMOLLM2).backend.chat_template
    cfg, tensors = read_gguf(served / "mine.gguf")
    recorded = json.loads((SMOLLM2 / "manifest.json").read_text())["model_id"]
    assert model_id(build_manifest(tensors, cfg.to_dict(), tok.digest())) == recorded


def test_defence_the_gguf_tokenizers_temporary_folder_never_outlives_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack on the isolation folder: two loads at once (a validator's scorer and its sibling
    format), a GGUF that cannot be read, and the tokenizer used after its folder is gone. Each load
    gets its own folder, none is left behind, and the tokenizer needs nothing from it later."""
    from supernet.node.llm.tokenizer import Tokenizer

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    digests: list[str] = []

    def load() -> None:
        digests.append(Tokenizer(SMOLLM2, gguf_file=GGUF).digest())

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert digests == [Tokenizer(SMOLLM2).digest()] * 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises
        Tokenizer(broken, gguf_file="bad.gguf")
    assert list(tmp.iterdir()) == []
    tok = Tokenizer(SMOLLM2, gguf_file=GGUF)
    assert list(tmp.iterdir()) == []
    tok.save(tmp_path / "saved")  # what `pull` does after the load
    assert Tokenizer(tmp_path / "saved").digest() == digests[0]
