"""The validator's sampling rule (docs/protocol.md) and the node's fault injector."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak
from supernet.node.faults import FaultInjector, FaultKind, FaultSpec, Generation, fabricate
from supernet.validator.sampler import draw, is_sampled, sample

V = "0x" + "ab" * 20
SEED = keccak(b"seed")


def test_draw_is_the_protocol_formula() -> None:
    expected = (
        int.from_bytes(keccak(encode(["bytes32", "address", "uint256"], [SEED, V, 3])), "big") % 1_000_000
    )
    assert draw(SEED, V, 3) == expected


def test_rate_bounds_and_frequency() -> None:
    assert sample(SEED, V, 50, 1_000_000) == list(range(50))
    assert sample(SEED, V, 50, 0) == []
    hits = sum(is_sampled(SEED, V, i, 100_000) for i in range(5_000))
    assert 400 < hits < 600  # ~10 %


def test_sample_depends_on_validator_and_seed() -> None:
    a = sample(SEED, V, 200, 300_000)
    assert a != sample(SEED, "0x" + "cd" * 20, 200, 300_000)
    assert a != sample(keccak(b"other"), V, 200, 300_000)


def test_fault_spec_parsing() -> None:
    assert FaultSpec.parse("tokens:0.5") == FaultSpec(FaultKind.TOKENS, 0.5)
    assert FaultSpec.parse("model") == FaultSpec(FaultKind.MODEL, 1.0)
    for bad in ("nope:1", "tokens:2", "tokens:x"):
        with pytest.raises(ValueError):
            FaultSpec.parse(bad)


def test_faults_fire_deterministically_at_their_rate() -> None:
    inj = FaultInjector.from_cli(["tokens:0.3"], seed=1)
    fired = [inj.fires(FaultKind.TOKENS, f"t:{i}") for i in range(2_000)]
    assert fired == [inj.fires(FaultKind.TOKENS, f"t:{i}") for i in range(2_000)]
    assert 450 < sum(fired) < 750
    assert not any(inj.fires(FaultKind.SEED, f"t:{i}") for i in range(100))


GEN = Generation(
    prompt_ids=(1, 2, 3, 4),
    output_ids=(5, 6, 7, 8, 9, 10),
    logprobs=(-0.1,) * 6,
    fingerprints=({"index": 0, "indices": [1, 2], "values": [3.0, -2.0]},),
    temperature=0.8,
    seed=5,
    finish_reason="length",
)


@pytest.mark.parametrize("kind", ["model", "tokens", "truncate", "seed"])
def test_generation_faults_change_what_they_say(kind: str) -> None:
    out = FaultInjector.from_cli([kind]).on_generation("k", GEN)
    if kind == "model":
        assert out.output_ids == GEN.output_ids and out.logprobs != GEN.logprobs
        assert out.fingerprints != GEN.fingerprints
    elif kind == "tokens":
        assert out.output_ids != GEN.output_ids and len(out.output_ids) == len(GEN.output_ids)
    elif kind == "truncate":
        assert out.output_ids == GEN.output_ids[:3] and out.finish_reason == "stop" and len(out.logprobs) == 3
    else:
        assert out.seed != GEN.seed and out.output_ids == GEN.output_ids
    assert FaultInjector.from_cli([]).on_generation("k", GEN) == GEN


def test_seed_fault_needs_a_sampled_call_and_tool_fault_a_deterministic_tool() -> None:
    inj = FaultInjector.from_cli(["seed", "tool", "trace"])
    greedy = Generation(prompt_ids=(1,), output_ids=(2,), temperature=0.0)
    assert inj.on_generation("k", greedy) == greedy
    assert inj.on_tool_result("k", "calculator", {}, 42) == 43
    assert inj.on_tool_result("k", "chain_read", {}, 42, deterministic=False) == 42
    assert inj.on_output("t", "hi") != "hi"
    assert fabricate({"a": 1}) == {"a": 2} and fabricate("x") != "x" and fabricate([1]) != [1]
