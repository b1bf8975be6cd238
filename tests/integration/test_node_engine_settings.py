"""`[engine] dtype` and `[engine] policy` reach the running kernel, and the served id names the dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
from supernet.node.kernel.policies import FifoPolicy
from supernet.node.llm.catalog import models_dir
from supernet.node.service.config import NodeSettings
from supernet.sdk.models import served_model_id

pytestmark = pytest.mark.model


async def test_a_bf16_fifo_node_serves_the_bf16_id_with_the_fifo_policy(tmp_path: Path) -> None:
    import json

    from supernet.node.service.kernel_executor import KernelExecutor
    from supernet.sdk.store.embedded import in_process_client

    weights = json.loads((models_dir() / "smollm2-135m" / "manifest.json").read_text())["model_id"]
    engine = {"dtype": "bfloat16", "policy": "fifo"}
    settings = NodeSettings.load(None, data_dir=tmp_path / "node", engine=engine)
    store = in_process_client(tmp_path / "store")
    executor = await KernelExecutor.create(settings, store, None)
    try:
        assert list(executor.model_ids()) == [served_model_id(weights, "bfloat16")]
        assert isinstance(executor.kernel.scheduler._policy, FifoPolicy)
    finally:
        await executor.close()
        await store.aclose()


def test_unknown_engine_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        NodeSettings.load(None, data_dir=tmp_path, engine={"dtype": "float16"})
    with pytest.raises(ValueError, match="policy"):
        NodeSettings.load(None, data_dir=tmp_path, engine={"policy": "lottery"})
