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

Findings (all four fixed; their tests are now ``test_defence_*``):
1. FIXED: a chat template that read the clock (``strftime_now``, as Llama 3.x templates do for
   their "Today Date" line) rendered other prompt ids under one digest on another day or in another
   time zone: the node's honest trace failed the validator's ``replay`` check. `Tokenizer` now
   refuses such a template at load (`TokenizerError`): a prompt is a function of the messages.
2. FIXED: ``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`` was outside
   the digest's deny-list of settings: two copies with one digest decoded the same ids to other
   text. `Tokenizer.encode` / ``decode`` now call the `tokenizers` pipeline the digest hashes whole,
   so no wrapper setting changes what is computed (the deny-list is gone).
3. FIXED: the digest hashes the libraries' view of the files: a library that serialises them
   otherwise bricked the pulled copy (``pull`` was a no-op). ``pull`` (and so ``make setup``) now
   re-derives the tokenizer's digest of a pulled copy and rewrites its manifest when it moved,
   saying why, and the loader's error says to pull again; the tokenizer libraries are pinned in
   node/pyproject.toml, so machines of one release name one id.
4. FIXED: the digest read the tokenizer's mutable state (a ``truncation`` block transformers clears
   at the first call): it is now taken once at load, with padding and truncation left out.
5. holds: every other file or setting tried either changes the digest or changes nothing the node
   and validator call (encode, decode with and without special tokens, chat template).
6. holds: the GGUF read directly (through a relative symlink of another name) and the pulled
   folder give one model id; the GGUF's tokenizer ignores hostile sibling files; its temporary
   folder is removed after success, failure and concurrent loads.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_review_cheating_node import SMOLLM2

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


# -- 1. a template that reads the clock -------------------------------------------------------------


def test_defence_a_template_that_reads_the_clock_is_refused_at_load(tmp_path: Path) -> None:
    """Attack (was a known limit): a Llama-family chat template dates the system turn with
    ``strftime_now`` (Llama 3.1 / 3.2 Instruct ship exactly this); node and validator hold
    byte-identical files, so one digest and one model id. transformers renders ``strftime_now`` with
    the machine's local clock: a node that ran the task at 23:59 and a validator replaying it two
    minutes later (or in a time zone east of it) got other prompt ids, a ``replay`` fault, and
    every validator re-checks after the fact, so the honest node was slashed.

    Now `Tokenizer` refuses, at load, a template that reads the clock (named or in a set of named
    templates), saying why; the same template without the date loads, and renders the same ids at
    any time of day (transformers' clock, set by the ``clock`` fixture, is never read)."""
    from supernet.node.llm.tokenizer import Tokenizer, TokenizerError

    with pytest.raises(TokenizerError, match="renders differently each time"):
        Tokenizer(_tokenizer_copy(tmp_path / "dated", files={"chat_template.jinja": DATED_TEMPLATE}))
    named = [{"name": "default", "template": "{{ messages[0].content }}"}]
    named.append({"name": "dated", "template": DATED_TEMPLATE})  # tokenizer_config's list of templates
    with pytest.raises(TokenizerError, match="'dated'"):
        Tokenizer(
            _tokenizer_copy(tmp_path / "named", {"chat_template": named}, drop=("chat_template.jinja",))
        )
    undated = DATED_TEMPLATE.replace('strftime_now("%d %b %Y")', '"26 Jul 2024"')
    tok = Tokenizer(_tokenizer_copy(tmp_path / "undated", files={"chat_template.jinja": undated}))
    chat = [{"role": "user", "content": "What is 2+2?"}]
    assert "26 Jul 2024" in tok.decode(tok.apply_chat_template(chat))


def test_defence_the_catalog_template_renders_the_same_ids_at_any_time(
    tmp_path: Path, clock: type[_Clock]
) -> None:
    """Control for the refusal: the catalog's template does not read the clock, so the prompt ids
    a node renders at 23:59 are the ones a validator renders past midnight."""
    from supernet.node.llm.tokenizer import Tokenizer

    tok = Tokenizer(SMOLLM2)
    chat = [{"role": "user", "content": "What is 2+2?"}]
    clock.at = datetime.datetime(2026, 12, 5, 23, 59)
    before = tok.apply_chat_template(chat)
    clock.at = datetime.datetime(2026, 12, 6, 0, 1)
    assert tok.apply_chat_template(chat) == before


# -- 2. a setting outside the digest ----------------------------------------------------------------


def test_defence_the_bpe_clean_up_override_changes_nothing(tmp_path: Path) -> None:
    """Attack (was a known limit): two copies of one model with ``clean_up_tokenization_spaces:
    true``; one also sets transformers 5's
    ``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`` (with it, spaces
    before punctuation are stripped on decode). Both had one digest, and decoded the same ids to
    different text: the text an agent reads and stop strings are looked for in, so node and
    validator disagreed on the agent's return value (``replay``) and honest nodes were accused.

    Now `Tokenizer.decode` (and ``encode``) call the `tokenizers` pipeline, which the digest hashes
    whole: the wrapper's settings change nothing a node or validator computes, and the two copies
    decode, stop and digest alike."""
    from supernet.node.kernel.dispatch import stop_text
    from supernet.node.llm.tokenizer import Tokenizer

    clean = {"clean_up_tokenization_spaces": True}
    flag = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
    theirs = Tokenizer(_tokenizer_copy(tmp_path / "a", config=clean))
    ours = Tokenizer(_tokenizer_copy(tmp_path / "b", config={**clean, flag: True}))
    assert getattr(ours.backend, flag) and not getattr(theirs.backend, flag)
    assert ours.backend.decode(ours.encode("is 4 . Done ,")) == "is 4. Done,"  # the wrapper would strip
    text = "The answer is 4 . Done , thanks !"
    ids = ours.encode(text)
    assert ids == theirs.encode(text)
    assert ours.decode(ids) == theirs.decode(ids) == text
    assert stop_text(ours, ids) == stop_text(theirs, ids)
    assert ours.digest() == theirs.digest() == Tokenizer(SMOLLM2).digest()


def test_defence_other_files_and_settings_either_change_the_digest_or_nothing(tmp_path: Path) -> None:
    """Attack on the digest: every other file and tokenizer_config field transformers reads
    that the digest might miss: legacy special_tokens_map.json and added_tokens.json, extra /
    additional special tokens, the tokenizer class (named, or picked through config.json's
    ``model_type`` when the config names none), ``legacy``, a generation_config.json with other
    EOS ids (no part of the node reads it: the EOS ids are config.json's, in the manifest), and a
    different template in tokenizer_config.json next to chat_template.jinja. For each, either the
    digest changes or encode, decode (with and without special tokens) and the chat template give
    what the catalog's copy gives."""
    from supernet.node.llm.tokenizer import Tokenizer, TokenizerError

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
    digest_changed, refused = [], []
    for name, change in variants.items():
        try:
            tok = Tokenizer(_tokenizer_copy(tmp_path / name, change.get("config"), change.get("files")))
        except TokenizerError:  # legacy files the tokenizer does not read: refused, never half-read
            refused.append(name)
            continue
        if tok.digest() != base.digest():
            digest_changed.append(name)
            continue
        assert tok.encode(text) == base.encode(text), name
        assert tok.decode(ids) == base.decode(ids), name
        assert tok.decode(ids, skip_special_tokens=True) == base.decode(ids, skip_special_tokens=True), name
        assert tok.apply_chat_template(chat) == base.apply_chat_template(chat), name
    assert "added_tokens" in digest_changed + refused  # a new token: a new pipeline, or no load
    assert set(refused) <= {"added_tokens", "special_tokens_map"}


# -- 3. the same files, another digest: a library's view ----------------------------------------


def test_defence_a_library_whose_serialisation_differs_is_repaired_by_pull(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setup: the pulled SmolLM2, untouched; then the machine's ``tokenizers`` (or transformers)
    is upgraded to a release that serialises one more default field of the BPE model (as 0.19
    added ``ignore_merges`` and 0.20 changed the merges' form). Simulated by a backend whose
    ``to_str`` adds such a field; nothing on disk changes.

    It was (known limit): the same files gave another model id, the pulled copy no longer loaded
    ("corrupt or edited copy"), and `pull` (so ``make setup``) was a no-op: the node could not start
    until someone deleted the folder. Now the loader's error says to pull again, and `pull`
    re-derives the recorded digest and rewrites the manifest (tensors kept, nothing downloaded or
    converted), after which the copy loads under the new id. Across machines the id still follows
    the library, which node/pyproject.toml pins for that reason."""
    from supernet.node.llm import catalog
    from supernet.node.llm import tokenizer as tokenizer_module
    from supernet.node.llm.errors import WeightsFormatError
    from supernet.node.llm.loader import load_model

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

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "_inner":
                object.__setattr__(self, name, value)
            else:
                setattr(self._inner, name, value)

    read = tokenizer_module._read_hf_files

    def read_with_newer_release(path: Path) -> Any:
        pipeline, special, template = read(path)
        return NewerRelease(pipeline), special, template

    monkeypatch.setattr(tokenizer_module, "_read_hf_files", read_with_newer_release)
    with pytest.raises(WeightsFormatError, match="pull` again"):
        load_model("smollm2-135m", max_positions=64)

    def convert(*args: object, **kwargs: object) -> None:
        raise AssertionError("pull converted the copy again")

    monkeypatch.setattr(catalog, "_download_gguf", convert)
    monkeypatch.setattr("supernet.node.llm.weights.read_gguf", convert)
    folder = home / "models" / "smollm2-135m"
    (folder / "manifest.json").unlink()  # a link to the real cache: the rewrite must not touch that
    shutil.copy(SMOLLM2 / "manifest.json", folder / "manifest.json")
    assert catalog.is_pulled("smollm2-135m")
    assert catalog.pull("smollm2-135m") == folder  # repaired, nothing converted
    assert catalog.refresh_manifest("smollm2-135m") is None  # current now
    repaired = load_model("smollm2-135m", max_positions=64)
    assert repaired.model_id == json.loads((folder / "manifest.json").read_text())["model_id"]
    assert repaired.model_id != json.loads((SMOLLM2 / "manifest.json").read_text())["model_id"]


def test_defence_the_digest_of_a_tokenizer_is_the_same_before_and_after_use(tmp_path: Path) -> None:
    """Setup: a tokenizer.json whose ``truncation`` block is set (some upstream files carry one);
    transformers clears it at the first call. It was (known limit): the same object digested
    differently before and after one `encode`. Now the digest is taken once at load, with padding
    and truncation (state, not a property of the files) left out: the same before and after use,
    and the same as the file without the block."""
    from supernet.node.llm.tokenizer import Tokenizer

    dest = _tokenizer_copy(tmp_path / "truncating", drop=("tokenizer.json",))
    doc = json.loads((SMOLLM2 / "tokenizer.json").read_text())
    doc["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    (dest / "tokenizer.json").write_text(json.dumps(doc))
    tok = Tokenizer(dest)
    fresh = tok.digest()
    tok.encode("one two three four five six seven")
    assert tok.digest() == fresh == Tokenizer(dest).digest() == Tokenizer(SMOLLM2).digest()


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
