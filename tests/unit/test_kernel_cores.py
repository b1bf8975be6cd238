"""LLM cores: a kernel serving several model ids routes each task's LLM calls to its model's engine.

The engines are the FAKE of ``tests/kernel_fixtures.py`` (made-up tokens, one batch each), so the
routing, the refusals and the configuration are tested alone and fast; the real models in two
precisions are ``tests/integration/test_node_models.py`` and ``test_validator_models.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio
from kernel_fixtures import FakeLLMEngine
from supernet.node.kernel.cores import LLMCore, LLMCores
from supernet.node.kernel.errors import ModelNotServedError
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.service.config import ModelSettings, NodeSettings
from supernet.node.service.kernel_executor import model_names, summed_stats
from supernet.sdk.formats.trace import LlmEvent, Trace

MODEL_A, MODEL_B = "0x" + "aa" * 32, "0x" + "bb" * 32
DTYPES: tuple[Literal["float32"], Literal["bfloat16"]] = ("float32", "bfloat16")


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters as the dispatcher builds them (the FAKE engine reads only the length)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_token_ids: tuple[int, ...] | None = None


class FakeTokenizer:
    """Enough of a tokenizer for the dispatcher: a chat template and a decoder."""

    eos_token_id = 0

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool
    ) -> list[int]:
        return [1 + len(m["content"]) % 50 for m in messages]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + t % 26) for t in ids)


class ServedFakeEngine(FakeLLMEngine):
    """The FAKE engine with a served model id and a dtype, as a core needs."""

    def __init__(self, model_id: str, dtype: str) -> None:
        super().__init__()
        self.model_id, self.dtype, self.device = model_id, dtype, "cpu"
        self.compute = dtype.removeprefix("torch.")  # the served format (a dtype name, or float16-weights)
        self.tokenizer = FakeTokenizer()
        self.max_batch = 4
        self.load_stats = {"active": 0, "steps": 1}

    def served(self) -> set[str]:
        """Request ids this engine ran a step of."""
        return {r for step in self.steps for r in step}


class NoEmbedder:
    """The memory manager's embedder, never called by these tests."""

    def embed(self, texts: Sequence[str]) -> Any:
        raise AssertionError("no memory in these tests")


@pytest_asyncio.fixture
async def two_model_kernel(
    store_client: Any,
) -> AsyncIterator[tuple[Any, ServedFakeEngine, ServedFakeEngine]]:
    from supernet.node.kernel.kernel import Kernel

    a, b = ServedFakeEngine(MODEL_A, "float32"), ServedFakeEngine(MODEL_B, "bfloat16")
    kernel = Kernel(
        [a, b],
        store_client,
        embedder=NoEmbedder(),  # type: ignore[arg-type]
        params_type=Sampling,
    )
    await kernel.setup()
    yield kernel, a, b
    await kernel.stop()


def spec(task_id: str, model_id: str | None) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        agent_id="chat",
        input={"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 3},
        model_id=model_id,
    )


async def test_each_task_runs_on_the_engine_of_its_model(two_model_kernel: Any) -> None:
    kernel, a, b = two_model_kernel
    assert kernel.model_ids == [MODEL_A, MODEL_B] and kernel.model_id == MODEL_A
    on_b = await kernel.run_task(spec("0x01", MODEL_B.upper().replace("0X", "0x")))  # ids: any case
    on_a = await kernel.run_task(spec("0x02", None))  # no model named: the first core
    assert on_a.status == on_b.status == "ok", (on_a.error, on_b.error)
    assert b.served() == {"0x01/llm/0"} and a.served() == {"0x02/llm/0"}
    for outcome, model_id, dtype in ((on_b, MODEL_B, "bfloat16"), (on_a, MODEL_A, "float32")):
        trace = Trace.from_dag(dict(outcome.trace))
        assert trace.model_id == model_id and trace.engine.dtype == dtype
        assert [e.model_id for e in trace.events if isinstance(e, LlmEvent)] == [model_id]
    assert kernel.engine_for(MODEL_B) is b and kernel.engine_for(None) is a


async def test_a_model_the_kernel_does_not_serve_is_refused_with_the_served_ids(
    two_model_kernel: Any,
) -> None:
    kernel, a, b = two_model_kernel
    with pytest.raises(ModelNotServedError, match=f"{MODEL_A}, {MODEL_B}"):
        kernel.submit(spec("0x03", "0x" + "cc" * 32))
    assert not a.steps and not b.steps


def test_cores_refuse_none_and_duplicates() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LLMCores([])
    engine = ServedFakeEngine(MODEL_A, "float32")
    with pytest.raises(ValueError, match="served twice"):
        LLMCores([LLMCore(engine, None), LLMCore(ServedFakeEngine(MODEL_A.upper(), "float32"), None)])


def test_engine_models_config(tmp_path: Path) -> None:
    one = NodeSettings.load(None, data_dir=tmp_path, engine={"model": "m", "dtype": "bfloat16"})
    assert one.engine.served() == [
        ModelSettings(model="m", dtype="bfloat16")
    ]  # the one-model form still works
    toml = tmp_path / "node.toml"
    toml.write_text(
        '[engine]\nagents = ["chat"]\n'
        '[[engine.models]]\nmodel = "smollm2-135m"\n'
        '[[engine.models]]\nmodel = "smollm2-135m"\ndtype = "bfloat16"\nname = "small-bf16"\n'
    )
    two = NodeSettings.load(toml, data_dir=tmp_path)
    assert [(m.model, m.dtype, m.name) for m in two.engine.served()] == [
        ("smollm2-135m", "auto", None),
        ("smollm2-135m", "bfloat16", "small-bf16"),
    ]
    with pytest.raises(ValueError, match="not both"):
        NodeSettings.load(None, data_dir=tmp_path, engine={"model": "m", "models": [{"model": "n"}]})
    with pytest.raises(ValueError, match="unique"):
        NodeSettings.load(None, data_dir=tmp_path, engine={"models": [{"model": "m", "name": "x"}] * 2})
    with pytest.raises(ValueError, match="dtype"):
        NodeSettings.load(None, data_dir=tmp_path, engine={"models": [{"model": "m", "dtype": "float16"}]})


def test_model_names_add_the_precision_only_where_two_share_a_name() -> None:
    a, b, c = (
        ServedFakeEngine(MODEL_A, "torch.float32"),
        ServedFakeEngine(MODEL_B, "float16-weights"),
        ServedFakeEngine("0x" + "cc" * 32, "torch.float32"),
    )
    served = [
        ModelSettings(model="smollm2-135m", dtype="float32"),
        ModelSettings(model="smollm2-135m", dtype="float16-weights"),
        ModelSettings(model="/models/other"),
    ]
    assert model_names(served, [a, b, c]) == {
        MODEL_A: "smollm2-135m@float32",
        MODEL_B: "smollm2-135m@float16-weights",
        c.model_id: "other",
    }
    with pytest.raises(ValueError, match="a second time"):
        model_names(served[:2], [a, ServedFakeEngine(MODEL_A, "torch.bfloat16")])
    named = [ModelSettings(model="x", name="other"), ModelSettings(model="/models/other", dtype="bfloat16")]
    assert model_names(named, [a, b]) == {MODEL_A: "other", MODEL_B: "other@float16-weights"}
    clash = [
        ModelSettings(model="x", name="m@float16-weights"),
        *(ModelSettings(model="m", dtype=d) for d in DTYPES),
    ]
    with pytest.raises(ValueError, match="share a name"):
        model_names(clash, [a, c, b])
    assert summed_stats([a, b]) == {"active": 0, "steps": 2}
