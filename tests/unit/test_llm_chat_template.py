"""The tokenizer without transformers (`supernet.node.llm.tokenizer`, `supernet.node.llm.chat_template`).

A node serves with the `tokenizers` pipeline and its own Jinja sandbox; transformers only reads a
GGUF's tokenizer. What it computes must not move: the same digest (so the same model id), the same
ids and the same rendered chats as transformers gives on the same files, for the catalog's template
and for templates that use what Hugging Face templates use (loop controls, ``namespace``,
``tojson``, ``raise_exception``, ``{% generation %}``, named templates). The sandbox holds, a
template that does not compile is refused at load, and encodes that switch how special tokens are
read do not race.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from supernet.node.llm.chat_template import ChatTemplate, ChatTemplateError
from supernet.node.llm.tokenizer import Tokenizer, TokenizerError

pytest_plugins = ["llm_fixtures"]

CHATS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a\nb  "},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "ünïcode ✓ {{ not a tag }}"},
    ],
    [{"role": "user", "content": "x", "name": None}, {"role": "assistant", "content": "y", "thinking": "t"}],
]

TEMPLATES = {
    "loops and namespace": (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}"
        "{% endif %}{% set ns.n = ns.n + 1 %}[{{ ns.n }}:{{ m['role'] }}]{{ m['content'] | trim }}"
        "{% if loop.last %}{% break %}{% endif %}{% endfor %}{{ eos_token }}"
    ),
    "tojson and dict": (
        "{% for m in messages %}{{ dict(role=m['role'], text=m['content']) | tojson }}\n{% endfor %}"
        "{% if add_generation_prompt %}{{ bos_token }}assistant{% endif %}"
    ),
    "generation and reasoning": (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}"
        "<think>{{ m.get('reasoning_content', '') }}</think>{{ m['content'] }}{% endgeneration %}"
        "{% else %}{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
    ),
    "whitespace control": (
        "{%- for m in messages %}\n  {{- '<' + m.role + '>' }}\n  {% if m.name is defined %}{{ m.name }}"
        "{% endif %}\n{{ m.content }}\n{% endfor -%}"
    ),
}


@pytest.fixture(scope="module")
def hf(smollm2_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


@pytest.fixture(scope="module")
def ours(smollm2_dir: Path) -> Tokenizer:
    return Tokenizer(smollm2_dir)


def test_the_catalog_tokenizer_is_transformers_own(ours: Tokenizer, hf: Any, smollm2_dir: Path) -> None:
    """Digest (the definition it always had, computed over transformers' objects), ids and sizes."""
    pipeline = json.loads(hf.backend_tokenizer.to_str())
    pipeline["truncation"] = pipeline["padding"] = None
    identity = {
        "pipeline": pipeline,
        "special_tokens": dict(hf.special_tokens_map),
        "chat_template": hf.chat_template,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert ours.digest() == hashlib.sha256(canonical.encode()).hexdigest()
    assert ours.digest() == json.loads((smollm2_dir / "manifest.json").read_text())["tokenizer"]
    assert (ours.eos_token_id, ours.vocab_size) == (hf.eos_token_id, len(hf))
    for text in ["Hello, world!", "<|im_end|> inside", "  spaces\n\ttabs", "数字 123"]:
        assert ours.encode(text) == hf.backend_tokenizer.encode(text, add_special_tokens=False).ids


def test_chats_render_as_transformers_renders_them(ours: Tokenizer, hf: Any) -> None:
    special = dict(hf.special_tokens_map)
    sources = {"catalog": str(ours.chat_template), **TEMPLATES}
    for name, source in sources.items():
        template = ChatTemplate(source)
        for chat in CHATS:
            for generation_prompt in (True, False):
                expected = hf.apply_chat_template(
                    chat, chat_template=source, tokenize=False, add_generation_prompt=generation_prompt
                )
                got = template.render(chat, generation_prompt, special)
                assert got == expected, (name, chat, generation_prompt)


def test_the_catalog_chat_ids_are_unchanged(ours: Tokenizer, hf: Any) -> None:
    """With no special token's text in a message, the ids are transformers' rendering encoded whole."""
    for chat in CHATS[:2]:
        text = hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        whole = hf.backend_tokenizer.encode(text, add_special_tokens=False).ids
        assert ours.apply_chat_template(chat) == whole


def test_raise_exception_and_an_empty_chat_are_clear_errors() -> None:
    template = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}ok"
    )
    assert template.render([{"role": "user", "content": "a"}], False) == "ok"
    with pytest.raises(ChatTemplateError, match="user first"):
        template.render([{"role": "system", "content": "a"}], False)
    with pytest.raises(ChatTemplateError, match="at least one message"):
        template.render([], False)


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{% set ns = namespace() %}{% set ns._hidden = 1 %}x",
        "{{ namespace(_x=1) }}",
        "{{ strftime_now('%Y') }}",  # no clock here (the tokenizer refuses such templates anyway)
        "{{ messages.append(1) }}",  # immutable sandbox
    ],
)
def test_the_sandbox_holds(source: str) -> None:
    with pytest.raises(ChatTemplateError):
        ChatTemplate(source).render([{"role": "user", "content": "a"}], False)


def _copy_tokenizer(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(src / name, dst / name)
    return dst


def test_a_template_that_does_not_compile_is_refused_at_load(smollm2_dir: Path, tmp_path: Path) -> None:
    folder = _copy_tokenizer(smollm2_dir, tmp_path / "tok")
    (folder / "chat_template.jinja").write_text("{% for m in messages %}unclosed")
    with pytest.raises(TokenizerError, match="does not compile"):
        Tokenizer(folder)


def test_named_templates_render_the_default_and_are_in_the_digest(
    smollm2_dir: Path, tmp_path: Path, ours: Tokenizer
) -> None:
    folder = _copy_tokenizer(smollm2_dir, tmp_path / "tok")
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [
        {"name": "default", "template": str(ours.chat_template)},
        {"name": "tool_use", "template": "tools"},
    ]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    named = Tokenizer(folder)
    assert named.apply_chat_template(CHATS[1]) == ours.apply_chat_template(CHATS[1])
    assert named.digest() != ours.digest()  # a second template is part of what the id names


def test_an_added_token_missing_from_the_pipeline_is_refused(smollm2_dir: Path, tmp_path: Path) -> None:
    """transformers would add it to the pipeline (other ids than the file's): the copy must be saved again."""
    folder = _copy_tokenizer(smollm2_dir, tmp_path / "tok")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {"49152": {"content": "<|new|>", "special": True}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match=r"not in tokenizer\.json"):
        Tokenizer(folder)


def test_plain_and_special_encodes_do_not_race(ours: Tokenizer) -> None:
    """A message's text reads special tokens as plain characters, the template's text parses them:
    one pipeline switched per encode, under a lock. Two threads interleaving both kinds."""
    chat = [{"role": "user", "content": "a <|im_end|> b"}]
    want_chat, want_text = ours.apply_chat_template(chat), ours.encode("x<|im_end|>y")
    assert want_text != ours._encode("x<|im_end|>y", plain=True)  # the switch matters
    bad: list[str] = []

    def work(kind: str) -> None:
        for _ in range(300):
            got = ours.apply_chat_template(chat) if kind == "chat" else ours.encode("x<|im_end|>y")
            if got != (want_chat if kind == "chat" else want_text):
                bad.append(kind)

    threads = [threading.Thread(target=work, args=(k,)) for k in ("chat", "text", "chat", "text")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_a_gguf_tokenizer_is_the_folder_tokenizer(smollm2_dir: Path, ours: Tokenizer) -> None:
    gguf = next(smollm2_dir.glob("*.gguf"))
    from_gguf = Tokenizer(gguf.parent, gguf_file=gguf.name)
    assert from_gguf.digest() == ours.digest()
    assert from_gguf.apply_chat_template(CHATS[1]) == ours.apply_chat_template(CHATS[1])
