"""The node counts the tasks its injected fault fired on (``supernet_fault_tasks``): the devnet demo
reads it to make sure its faulty node did cheat before it judges the network."""

from __future__ import annotations

from prometheus_client import generate_latest
from supernet.node.faults import FaultInjector, FaultKind
from supernet.node.service.metrics import NodeMetrics


def test_the_tasks_a_fault_fired_on_are_counted_once_each_and_exported() -> None:
    faults = FaultInjector.from_cli(["answer:0.5"])
    keys = [f"0x{n:064x}" for n in range(40)]
    fired = [k for k in keys if faults.fires(FaultKind.ANSWER, k)]
    assert 0 < len(fired) < len(keys)  # a chance per task
    for k in keys:  # asked again (a task's calls ask per call): still once per task
        faults.fires(FaultKind.ANSWER, k + ":3")
    assert faults.fired == set(fired) | {k for k in keys if faults.fires(FaultKind.ANSWER, k + ":3")}
    metrics = NodeMetrics()
    metrics.watch_faults(lambda: len(faults.fired))
    assert f"supernet_fault_tasks {float(len(faults.fired))}" in generate_latest(metrics.registry).decode()


def test_a_decoys_planted_fault_is_not_counted() -> None:
    """The node's own decoys always get the ``tokens`` fault; that is no cheat of the node's."""
    faults = FaultInjector()
    faults.decoys.add("0x" + "ab" * 32)
    assert faults.fires(FaultKind.TOKENS, "0x" + "ab" * 32 + ":0")
    assert faults.fired == set()
