"""The validator's scorer computes each shared prompt prefix once, as the node's prefix cache does.

A node serves long prompts its calls share (a document several questions are asked about, the
earlier turns of a chat) from its engine's prefix cache and prefills only what is new; a validator
that re-read every prompt in full paid ~30x the node's prefill per sampled call
(tests/unit/test_review_validator_budgets.py, the cost-asymmetry attack). `ModelScorer.score_many`
walks the calls of a pass as a radix tree over their prompts. These tests hold it to the same
scores as one plain pass per call, whatever the shape of the tree (the shapes a node could choose to
make the walk expensive included), and count the tokens it puts through the decoder.
"""

from __future__ import annotations

import random

import pytest
from llm_fixtures import make_tiny_llama
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm.scoring import ScoreRequest, score
from supernet.validator import scoring as validator_scoring
from supernet.validator.scoring import ModelScorer

SAMPLED = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=5)
HEADER = tuple(range(1, 13))  # a chat template's system turn


@pytest.fixture(scope="module")
def tiny() -> LLMEngine:
    return LLMEngine.from_model(make_tiny_llama(7), max_batch=4, max_seq_len=256)


def scorer_of(engine: LLMEngine) -> ModelScorer:
    return ModelScorer(engine.model, None, engine.weights_id, (0,))  # type: ignore[arg-type]


def assert_same_as_one_pass_each(engine: LLMEngine, requests: list[ScoreRequest], got: list) -> None:
    assert len(got) == len(requests)
    for k, (r, g) in enumerate(zip(requests, got, strict=True)):
        ref = score(engine.model, r.prompt_ids, r.output_ids, r.params)
        assert len(g.logprobs) == len(r.output_ids), k
        if r.output_ids:
            assert max(abs(a - b) for a, b in zip(ref.logprobs, g.logprobs, strict=True)) < 1e-4, k
            assert [t[0][0] for t in ref.top_tokens] == [t[0][0] for t in g.top_tokens], k
        assert (ref.margins is None) == (g.margins is None), k


def unshared_tokens(requests: list[ScoreRequest]) -> int:
    """What one pass per call puts through the decoder."""
    return sum(len(r.prompt_ids) + len(r.output_ids) - 1 for r in requests if r.output_ids)


def test_questions_on_two_documents_read_each_document_once(tiny: LLMEngine) -> None:
    """The attack's shape: two long documents, questions on each interleaved in one pass."""
    docs = [tuple(13 + (7 * i) % 80 for i in range(80)), tuple(13 + (11 * i + 5) % 80 for i in range(80))]
    requests = [
        ScoreRequest((*HEADER, *docs[k % 2], 99 - k, 98 - k), [3 + k, 4, 5], SAMPLED if k % 3 else None)
        for k in range(12)
    ]
    scorer = scorer_of(tiny)
    got = scorer.score_many(requests)
    assert_same_as_one_pass_each(tiny, requests, got)
    # each document once (~80 tokens each), then each question's tail: not 12 full prompts
    assert scorer.stats.tokens <= len(HEADER) + 2 * 80 + 12 * (2 + 2) + 12, scorer.stats
    assert unshared_tokens(requests) > 5 * scorer.stats.tokens

    # the next pass asks one more question on each: both documents come from the cache
    more = [ScoreRequest((*HEADER, *d, 100, 99), [6, 7], None) for d in docs]
    before = scorer.stats.tokens
    assert_same_as_one_pass_each(tiny, more, scorer.score_many(more))
    assert scorer.stats.tokens - before <= 2 * (2 + 1), scorer.stats


def test_a_growing_chat_reads_each_turn_once(tiny: LLMEngine) -> None:
    """Each call of a chat holds the previous call's prompt and output: the validator reads the
    conversation about once, not once per turn (a quadratic cost the node never pays). A branch
    whose shared part would spare its calls fewer than `MIN_SAVED_TOKENS` is read by each of them:
    at most that many tokens more per branch point."""
    prompt: tuple[int, ...] = HEADER
    requests = []
    for turn in range(6):
        prompt = (*prompt, *((20 + 7 * turn + j) % 97 + 1 for j in range(24)))  # the user's turn
        output = [(turn * 13 + j) % 90 + 3 for j in range(24)]
        requests.append(ScoreRequest(prompt, output, SAMPLED if turn % 2 else None))
        prompt = (*prompt, *output)
    order = [3, 0, 5, 1, 4, 2]  # receipts reach the scorer in any order
    shuffled = [requests[i] for i in order]
    scorer = scorer_of(tiny)
    assert_same_as_one_pass_each(tiny, shuffled, scorer.score_many(shuffled))
    whole = len(requests[-1].prompt_ids) + len(requests[-1].output_ids)
    spared = validator_scoring.MIN_SAVED_TOKENS * (len(requests) - 1)
    assert scorer.stats.tokens <= whole + spared, (scorer.stats, whole)
    assert unshared_tokens(requests) > 2 * scorer.stats.tokens, scorer.stats


def test_duplicates_prefixes_of_each_other_and_empty_outputs_keep_their_places(tiny: LLMEngine) -> None:
    base = (*HEADER, *range(30, 50))
    requests = [
        ScoreRequest(base, [1, 2, 3]),
        ScoreRequest(base, [4, 5], SAMPLED),  # the same prompt, another output
        ScoreRequest(base[:15], [6]),  # a prefix of the others
        ScoreRequest(base, []),  # nothing to score
        ScoreRequest((9,), [7, 8]),  # one token
        ScoreRequest((*base, 60), [2]),  # one token past the others
        ScoreRequest(base[:16], [], SAMPLED),
        ScoreRequest(base, [1, 2, 3]),  # an exact duplicate
    ]
    got = scorer_of(tiny).score_many(requests)
    assert_same_as_one_pass_each(tiny, requests, got)
    assert got[0].logprobs == pytest.approx(got[7].logprobs, abs=1e-6)
    assert got[3].logprobs == () and got[6].margins == ()


def test_an_empty_prompt_is_refused() -> None:
    scorer = scorer_of(LLMEngine.from_model(make_tiny_llama(1), max_batch=1, max_seq_len=32))
    with pytest.raises(ValueError, match="at least one token"):
        scorer.score_many([ScoreRequest((1, 2), [3]), ScoreRequest((), [3])])


def test_a_comb_of_prompts_costs_no_more_than_unshared_scoring(tiny: LLMEngine) -> None:
    """Attack on the walk itself: prompts that branch at every position (a comb), so that the tree
    is as deep as the prompts are long. The walk stays iterative (no recursion limit), adds at most
    one pass per branch point, and never scores more tokens than one pass per call."""
    spine = tuple((3 + i) % 97 + 1 for i in range(200))
    requests = [ScoreRequest((*spine[:k], 100), [1, 2]) for k in range(1, 200, 3)]
    scorer = scorer_of(tiny)
    assert_same_as_one_pass_each(tiny, requests, scorer.score_many(requests))
    assert scorer.stats.passes <= 2 * len(requests), scorer.stats
    assert scorer.stats.tokens <= unshared_tokens(requests) // 4, scorer.stats


def test_random_trees_score_as_one_pass_each_under_a_small_pass_budget(
    tiny: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random prompt trees (shared stems of random lengths, branches, duplicates), packed under a
    budget small enough that a branch's calls span several passes."""
    monkeypatch.setattr(validator_scoring, "MAX_PACKED_TOKENS", 40)
    rng = random.Random(1234)
    scorer = scorer_of(tiny)
    for _ in range(4):
        stems = [tuple(rng.randrange(1, 90) for _ in range(rng.randrange(0, 60))) for _ in range(3)]
        requests = []
        for _ in range(10):
            stem = rng.choice(stems)
            cut = rng.randrange(0, len(stem) + 1)
            tail = tuple(rng.randrange(1, 90) for _ in range(rng.randrange(1, 12)))
            out = [rng.randrange(1, 90) for _ in range(rng.randrange(0, 8))]
            requests.append(ScoreRequest((*stem[:cut], *tail), out, rng.choice([None, SAMPLED])))
        before = scorer.stats.tokens
        assert_same_as_one_pass_each(tiny, requests, scorer.score_many(requests))
        assert scorer.stats.tokens - before <= unshared_tokens(requests)


def test_a_tree_of_long_branching_prompts_holds_bounded_keys_and_values(
    tiny: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack on the walk's memory: a spine with a pair of calls branching off every 16 tokens, so
    that every branch point computes a prefix of its own (each longer than the last). Holding each
    branch's keys/values until the end would keep the sum of their lengths (quadratic in the
    prompt) alive; the walk holds the cache's entries and the packs' prefixes, scored once those
    reach `HELD_PREFIX_TOKENS`."""
    monkeypatch.setattr(validator_scoring, "MIN_SAVED_TOKENS", 8)  # every branch point a prefix pass
    monkeypatch.setattr(validator_scoring, "HELD_PREFIX_TOKENS", 96)
    spine = tuple((5 + 3 * i) % 97 + 1 for i in range(240))
    requests = [
        ScoreRequest((*spine[: 16 * k], 100, *([50 + side] * 9)), [1, 2, 3])
        for k in range(1, 14)
        for side in (0, 1)
    ]
    scorer = scorer_of(tiny)
    held: list[int] = []
    real = scorer._score_packs

    def measured(requests: list, packs: dict, results: list) -> None:
        held.append(sum(len(prefix) for prefix in packs))
        real(requests, packs, results)

    monkeypatch.setattr(scorer, "_score_packs", measured)
    assert_same_as_one_pass_each(tiny, requests, scorer.score_many(requests))
    assert len(held) > 2  # scored on the way, not all at the end
    assert max(held) <= 96 + 16 * 13 + 10, held  # the cap, overshot by one branch's prefix at most
    assert len(scorer._prefixes) <= validator_scoring.PREFIX_CACHE_ENTRIES
