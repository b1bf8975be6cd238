"""Adversarial review of the session's newest rules (1995669, c5faac9, fcc0bac, e9958bb, 0a4ae28), mainly
as a malicious user or a rival trying to get an HONEST node accused by them, and as a cheating node
trying to slip past them.

Scope: (1) the one finish rule (`supernet.node.llm.types.finish_reason_of`, the engine's
``_finish_if_done``, the scheduler's ``"stopped"``, `supernet.validator.llm_check._check_finish`);
(2) ``chain_read``'s `MAX_PIN_AGE_S` and `CHAIN_READ_GAS` / `OUT_OF_GAS`
(`supernet.validator.chain_check`); (3) the trace gate's bound
(`supernet.node.kernel.trace.llm_record_bound` with the grammar, the stop strings and
`Tokenizer.max_token_bytes`); (4) the replay's recorded confirmations (`replay._TapeConfirmations`).
Real parts: an Anvil started here (the node's own ``chain_read`` tool, the whole `Verifier`), the
SmolLM2 tokenizer (no model), the real `TraceRecorder` and dag-cbor encoding, the node service with
its real kernel, access manager and confirmation API (no model: the agent makes tool calls only),
and the validator's replay.

Found (``test_attack_*``, failing until fixed):

1. MEDIUM, FIXED (`test_defence_an_honest_latest_read_during_a_finality_stall_is_no_finding`): the pin
   age is measured from the pinned block's timestamp, but an honest node pins the *finalized* head,
   whose age at the moment of the read is the chain's finality lag, not the node's doing. When
   finality stalls for more than 6 h (an L1 finality incident: an L2's ``finalized`` tag follows its
   L1; a batch poster that stops; a chain that mines only on demand), every honest read of
   ``latest`` committed a few seconds later is a finding: all nodes serving ``chain_read`` accused at
   once, for reads they made exactly as the tool defines. Fixed: the tool refuses a read of the
   head while it lags the latest block by more than `STALE_FINAL_S` (half the pin age), in fixed
   words validators accept as a moment (`chain_read.STALE_FINAL`).
2. LOW, FIXED (`test_defence_the_node_config_refuses_a_batch_age_that_commits_past_the_pin_age`): the
   node's `BatchSettings` accepts ``max_age_s`` of hours (a quiet node saving gas), so its batches
   are committed up to ``2 * max_age_s + 60`` s after a receipt, past `MAX_PIN_AGE_S`: the operator's
   accepted configuration turns every honest ``latest`` read into a finding. Fixed: the settings
   refuse a commit margin past the pin age less finality's lag and an hour for the task.
3. LOW, FIXED (`test_defence_a_messages_roles_are_counted_by_the_trace_gate`): the gate counts a
   message's content (4 bytes a character) and 32 bytes for the rest, but a role may be 64
   characters (`tokenizer.MAX_ROLE_CHARS`) and one token (``"#" * 64``): each such message adds ~24
   bytes the bound does not hold, ~8 KB over a context of them. A user sizes its trace so that the
   gate admits the call, the tokens stream, and `save_trace` fails the task unbilled (the LOW class
   of tests/unit/test_review_hostile_parties2.py, by another field). Fixed: roles are counted.

Checked and holding (``test_defence_*``, ``test_known_limit_*``): parallel confirmed calls of one
action (``asyncio.gather``), one of them refused for want of a confirmation and retried as the next
occurrence, replay clean under `_TapeConfirmations` (one recovery each, occurrences from the
replay's own count); a stop string completed on the last budgeted token is ``"stopped"`` in the
scheduler (its ``_preempt`` of a finished sequence reads the result) and recorded ``"stop"``, the
rule's answer; node and validator use the same stop set (``stop_token_ids`` is never a user's
parameter: ``None`` -> the model config's ``eos_token_ids``, part of the model id, so a GGUF copy
with other EOS ids has another id); a grammar's end is a stop token (`GrammarConstraint.allowed`
falls back to the stop set); ``"preempted"``/``"cancelled"`` never reach a trace on an honest path
(the scheduler resumes or fails the call); the out-of-gas words only apply to a recorded *value*
(an honest node whose RPC fails records `CHAIN_UNREACHABLE`, accepted as a moment) and reverts,
whatever their reason text, are `ContractLogicError` caught in `read_at` (a revert reason "out of
gas" is a recorded revert, not the rule's words); the user cannot set a confirmation that the
node's check words differently from the replay's (`spec.confirmations` is empty on a live node,
and the API refuses signatures that are not the user's). Known limits: a call whose bound exceeds
`MAX_TRACE_BYTES` on its own (a short prompt asking for nearly the whole 2,048-token context at
194 bytes a token) is refused before any token though its record would be a tenth of that; a
validator whose RPC caps calls below 10M gas (geth's ``--rpc.gascap`` silently lowers a call's
gas) finds an honest value "out of gas" (docs/validator.md requires 10M; nothing checks it at
start); a commit transaction stuck under a base-fee spike is only re-broadcast, never replaced
(`Batcher._commit_once`), so a spike lasting hours delays every later batch past the pin age.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from node_fixtures import FakeChain, signed_task
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.chain_read import MAX_PIN_AGE_S, chain_read
from supernet.node.kernel.errors import ConfirmationRequiredError, ToolUnavailableError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.tools import Tool, ToolRegistry, ToolSpec
from supernet.node.kernel.trace import MAX_TRACE_BYTES, TraceRecorder, llm_record_bound
from supernet.node.service.config import BatchSettings, NodeSettings
from supernet.node.service.db import Database
from supernet.node.service.identity import load_account
from supernet.node.service.kernel_executor import KernelExecutor, access_policy
from supernet.node.service.runner import NodeService
from supernet.sdk.agents import Agent, AgentContext
from supernet.sdk.chain.anvil import Anvil, increase_time, mine
from supernet.sdk.client.confirm import confirmation_body
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS
from supernet.sdk.store.cids import encode_dag
from supernet.sdk.store.embedded import in_process_client
from supernet.validator.chain_check import check_chain_read
from supernet.validator.trace_view import ToolCall

from tests.unit.test_node_confirmations import StubEmbedder, StubEngine, pending_event, wait_end
from tests.unit.test_review_rational_node2 import BalanceOracle
from tests.unit.test_review_session_changes10 import _chain_read_verdict

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
ADDRESS = "0x" + "5a" * 20

# -- 1, 2. chain_read: the pin age an honest node cannot help --------------------------------------------


@pytest.fixture(scope="module")
def stalled() -> Iterator[Anvil]:
    """An Anvil whose finalized head stopped moving for longer than `MAX_PIN_AGE_S`: one block, then
    no block for 6 h 10 min (a finality stall, or a chain that mines on demand), then the head moves
    on; finality (two blocks behind the head, the wrapper's setting) still names the old block."""
    proc = Anvil(accounts=2)
    with proc:
        mine(proc.web3(), 3)
        increase_time(proc.web3(), MAX_PIN_AGE_S + 600)  # mines the first block after the stall
        mine(proc.web3(), 1)  # the head moved; the final head is the block from before the stall
        yield proc


@pytest.mark.anvil
async def test_defence_an_honest_latest_read_during_a_finality_stall_is_no_finding(stalled: Anvil) -> None:
    """MEDIUM. Who gains: a rival or any challenger (the slash of every node that served
    ``chain_read`` while finality was stalled); who loses: honest nodes, for reads they made exactly as
    the tool defines.

    Attack: during a stall of the chain's finality longer than `MAX_PIN_AGE_S` (an L2's
    ``finalized`` follows its L1's, which has stalled for hours on testnets and for an hour on
    mainnet; a batch poster that stops; a chain that mines only on demand), an agent reads
    ``balance`` at ``latest``. The node's real tool pins the *finalized* head, as it must, and
    the node commits the receipt in the very next block. The validator measures the pin's age
    from the pinned block's timestamp to the commit block's: 6 h 10 min, "past 6 h", a finding,
    though the node committed within seconds of its read.

    Fix (by design): the age a node can be held to starts at its read, and the finality lag is the
    chain's. Let the tool refuse a tag read whose finalized head is already older than a protocol
    margin (say ``MAX_PIN_AGE_S / 2``) than the latest block (``ToolUnavailableError`` in fixed
    words, e.g. ``STALE_FINAL``, a moment validators accept as they accept `CHAIN_UNREACHABLE`);
    the other half bounds the node's commit delay (see the config finding). The agent then sees
    a refusal (as when the RPC is down), never a value no validator will take.
    """
    url = stalled.url
    args = {"method": "balance", "address": ADDRESS}
    try:  # the node's own tool, as its kernel runs it
        honest = dict(await chain_read(url)(args))
    except ToolUnavailableError as exc:  # a refusal in the tool's own words: what a fixed tool may say
        error = f"{type(exc).__name__}: {exc}"
        call = ToolCall(0, "chain_read", args, None, error, False)
        finding, _, _ = await check_chain_read(call, lambda name, a: None, None, False, None)
        assert finding is None, finding
        return
    mine(stalled.web3(), 1)  # the commit: in the very next block after the read
    commit = int(stalled.web3().eth.block_number)
    verdict = await _chain_read_verdict(BalanceOracle, {"address": ADDRESS}, args, honest, url, commit)
    assert not verdict.findings, (
        f"an honest read of latest (pinned by the tool to the finalized block {honest['block']}), "
        f"committed in the next block ({commit}), is accused: {[f.message for f in verdict.findings]}"
    )


def test_defence_the_node_config_refuses_a_batch_age_that_commits_past_the_pin_age() -> None:
    """LOW. Who gains: a challenger (every ``latest`` read of such a node is a finding); who loses:
    an honest operator who batches rarely to save gas (a quiet node, one commit every few hours).

    Attack: `BatchSettings` checks ``promise_s`` against ``commit_margin_s`` (``2 * max_age_s + 60``)
    but nothing bounds either by `MAX_PIN_AGE_S`: ``max_age_s`` of 4 h is accepted, so a receipt's
    batch may be committed 8 h after it, and a ``chain_read`` of ``latest`` in it is "pinned past
    6 h" (docs/validator.md: "a node must commit a receipt within 6 h of its reads"; the config
    does not say so).

    Fix (by design): the node's settings refuse a ``commit_margin_s`` (plus the task timeout and
    the finality margin of the first finding) above `MAX_PIN_AGE_S`, naming the rule.
    """
    hours = 3600
    with pytest.raises(ValueError):
        settings = BatchSettings(max_age_s=4 * hours, promise_s=9 * hours)
        assert settings.commit_margin_s > MAX_PIN_AGE_S  # what it allows: commits past the pin age


# -- 3. the trace gate's bound --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> Any:
    """The served vocabulary's tokenizer alone (no model): what the gate's bound is computed with."""
    if not (SMOLLM2 / "tokenizer.json").exists():
        pytest.skip("SmolLM2 not cached")
    from supernet.node.llm.tokenizer import Tokenizer

    return Tokenizer(SMOLLM2)


def _recorder() -> TraceRecorder:
    """A chat task's recorder with the context fields the kernel adds (`agent_run.task_context`)."""
    limits = {"memory": False, "storage": False, "max_llm_calls": 1, "max_llm_tokens": 4096}
    limits |= {"max_new_tokens": 4096, "max_tool_calls": 0, "max_file_bytes": 0}
    context = {"seed": 1, "limits": limits, "tools": [], "agents": []}
    context["engine"] = {"device": "cpu", "dtype": "float32"}
    user, code, model = "0x" + "11" * 20, "0x" + "cd" * 32, "0x" + "ef" * 32
    return TraceRecorder("0x" + "ab" * 32, user, 100, "chat", code, model, {}, context)


def _record_added(
    messages: list[dict[str, str]], prompt_ids: list[int], output_ids: list[int], text: str
) -> int:
    """What one LLM call adds to a trace as the kernel records it (`Dispatcher._llm`: the event through
    the real `TraceRecorder`, and the task's output, the reply's text, as the chat agent returns it),
    against the trace the gate measured before the call (no event yet, an empty output)."""
    recorder = _recorder()
    before = len(encode_dag(recorder.build("", "ok", None)))
    recorder.record(
        "llm",
        index=0,
        model_id="0x" + "ef" * 32,
        messages=messages,
        prompt_ids=tuple(prompt_ids),
        output_ids=tuple(output_ids),
        params={
            "max_new_tokens": len(output_ids),
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 2**63 - 1,
            "stop_token_ids": None,
            "stop": (),
        },
        finish_reason="length",
        logprobs=tuple(-0.5 for _ in output_ids),
        fingerprints=(
            {"index": 0, "indices": tuple(range(8)), "values": tuple(-1.0 - k / 3 for k in range(8))},
        ),
        text=text,
        preemptions=0,
    )
    return len(encode_dag(recorder.build(text, "ok", None))) - before


def test_defence_a_messages_roles_are_counted_by_the_trace_gate(smollm2_tokenizer: Any) -> None:
    """LOW. Who gains: the user (the call's tokens, streamed, and its prefill unpaid); the node pays.

    Attack: the gate admits an LLM call only if the trace so far plus `llm_record_bound` fits
    `MAX_TRACE_BYTES`. The bound counts each message's content at 4 bytes a character plus 32 bytes
    for the rest of the message; the role is in that 32. A role may be 64 characters (the chat
    template's `MAX_ROLE_CHARS`; the chat agent's input schema takes any string), and ``"#" * 64``
    is one SmolLM2 token, so the 5 bytes a prompt token is allowed do not hold it either: each
    message ``{"role": "#" * 64, "content": ""}`` adds ~24 bytes more than its share of the bound.
    A conversation of such messages fills the protocol's context with ~8 KB the gate never counted
    (more than its 1 KiB of slack). A user who sizes its input so that the trace before the call
    sits within that gap of the cap gets the call admitted, its tokens streamed, and then the task
    fails in `save_trace` (`TraceTooLargeError`), unbilled.

    Fix (by design): count what a message holds: ``4 * (len(role) + len(content)) + 32`` (or the
    whole message's encoded size, `encode_dag` of the messages as recorded), so the bound is a bound
    of every field the record repeats.
    """
    tok = smollm2_tokenizer
    role = "#" * 64
    assert len(tok.encode(role)) == 1  # one token of the served vocabulary
    messages = [{"role": role, "content": ""} for _ in range(360)]
    prompt_ids = list(tok.apply_chat_template(messages, add_generation_prompt=True))  # the real template
    output_ids = [tok.encode("#")[0]]
    assert len(prompt_ids) + len(output_ids) <= MAX_CONTEXT_TOKENS  # a call the protocol's context holds
    added = _record_added(messages, prompt_ids, output_ids, "#")
    bound = llm_record_bound(messages, prompt_ids, len(output_ids), tok.max_token_bytes)
    assert added <= bound, (
        f"{len(messages)} messages of a 64-character one-token role: the call's record adds {added} bytes "
        f"to the trace, the gate's bound for it is {bound} ({added - bound} bytes never counted)"
    )


def test_known_limit_a_call_of_nearly_the_whole_context_is_refused_whatever_it_would_record(
    smollm2_tokenizer: Any,
) -> None:
    """A short chat asking for nearly the whole 2,048-token context (a node whose policy allows
    ``max_new_tokens`` of ~2,000; the default is 128) has a bound of 194 bytes a token (32 + twice
    the vocabulary's longest token, 81 bytes), past `MAX_TRACE_BYTES` on its own: refused "before any
    token", though an ordinary reply of that length records ~30 KB and only a reply of 80-byte tokens
    throughout (a grammar forcing them) could come near the cap. Acceptable: the bound must hold for
    the worst reply, and the refusal is before any work (no receipt, nothing billed). What would
    lift it: stop a call by a deterministic rule when its running record reaches the cap (a finish
    reason the replay re-derives from the tokens), instead of a bound at the worst token."""
    tok = smollm2_tokenizer
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]  # 15 tokens
    prompt_ids = list(tok.apply_chat_template(messages, add_generation_prompt=True))
    max_new = MAX_CONTEXT_TOKENS - len(prompt_ids)
    bound = llm_record_bound(messages, prompt_ids, max_new, tok.max_token_bytes)
    empty = len(encode_dag(_recorder().build("", "ok", None)))  # the smallest trace before the call
    assert empty + bound > MAX_TRACE_BYTES, (empty, bound, MAX_TRACE_BYTES)
    ordinary = _record_added(messages, prompt_ids, [330] * max_new, tok.decode([330] * max_new))
    assert ordinary < MAX_TRACE_BYTES // 4, ordinary


# -- 4. recorded confirmations in the replay ----------------------------------------------------------


class GatherPayer(Agent):
    """Pays every amount at once (``asyncio.gather``: one action may be made several times in
    parallel), then retries each payment that was refused (the retry is the action's next
    occurrence, which the user confirms anew)."""

    agent_id = "gather-payer"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        amounts = input["amounts"]
        calls = (ctx.tools.call("pay", {"amount": a}) for a in amounts)
        first = await asyncio.gather(*calls, return_exceptions=True)
        paid = []
        for amount, got in zip(amounts, first, strict=True):
            if isinstance(got, ConfirmationRequiredError):
                got = "retried " + str(await ctx.tools.call("pay", {"amount": amount}))
            elif isinstance(got, BaseException):
                raise got
            paid.append(got)
        return f"paid {paid}"


async def test_defence_parallel_and_retried_confirmed_calls_replay_clean(tmp_path: Path) -> None:
    """A user runs an agent that makes one payment twice and another once, all at once; it leaves the
    first call unconfirmed (refused after the node's timeout), confirms the others, and confirms the
    retry (the action's third occurrence). The node's real kernel, access manager and confirmation
    API record the trace; the validator's replay (`_TapeConfirmations`: the signature of the tape's
    next event, recovered under the hash of the call the replay makes, occurrences from its own
    count) replays it with no divergence: the calls take turns in call order (`Dispatcher.handle`),
    so the node's occurrences and the replay's are the same, and the refused call's occurrence is
    spent on both sides."""
    import httpx
    from supernet.node.kernel.replay import replay

    chain = FakeChain()
    user = Account.create()
    chain.deposits[user.address] = 10**18
    store = in_process_client(tmp_path / "store")
    groups = [{"name": "payers", "agents": [GatherPayer.agent_id], "tools": ["pay"]}]
    cfg = NodeSettings.load(
        None, data_dir=tmp_path / "node", access={"confirmation_timeout_s": 1.0, "groups": groups}
    )
    payments: list[int] = []

    def pay(args: Mapping[str, Any]) -> str:
        payments.append(int(args["amount"]))
        return f"sent {args['amount']}"

    tools = ToolRegistry()
    tools.register(
        Tool(ToolSpec("pay", "Send money (irreversible)", {"type": "object"}, irreversible=True), pay)
    )
    agents = AgentRegistry()
    agents.register(GatherPayer)
    config = KernelConfig(node_policy=NodePolicy(**access_policy(cfg.access)), eip712_domain=chain.domain)
    kernel = Kernel(
        StubEngine(), store, config, agents=agents, tools=tools, embedder=StubEmbedder(), params_type=dict
    )
    await kernel.setup()
    executor = KernelExecutor(kernel, "stub", 10**12, Database.open(cfg.data_dir / "node.sqlite3"))
    service = NodeService(cfg, executor, load_account(cfg), store, chain)
    await service.setup()
    assert service.app is not None
    auth = ReadGrantAuth(user, service.account.address, chain.domain)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://node", auth=auth
    )
    node = type("N", (), {"ctx": service.ctx, "http": http})()
    try:
        body = signed_task(
            user,
            service.account.address,
            chain.domain,
            {"amounts": [5, 5, 7]},
            cumulative=10**12,
            agent_hash=executor.agent_hash(GatherPayer.agent_id) or "",
        )
        r = await http.post("/v1/tasks", json={**body, "agent": GatherPayer.agent_id})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        url = f"/v1/tasks/{task_id}/confirmations"
        asked = [await pending_event(node, task_id, 1)]  # the first 5: left unconfirmed, refused
        for k in (2, 3, 4):  # the second 5, the 7, the retried first 5
            asked.append(await pending_event(node, task_id, k))
            r = await http.post(
                url, json=confirmation_body(task_id, asked[-1], chain.domain, user, repeat=True)
            )
            assert r.status_code == 200 and r.json()["resumed"], r.text
        done = await wait_end(node, task_id)
        assert done["status"] == "done", done
        assert [e["args"]["amount"] for e in asked] == [5, 5, 7, 5] and payments == [5, 7, 5]
        assert len({e["actionHash"] for e in asked}) == 4  # occurrences 0, 1, 2 of one action, and the 7
        trace = await store.get_dag(done["traceCid"])
        kinds = [(e["kind"], bool(e.get("confirmation"))) for e in trace["events"]]
        assert kinds == [("error", False), ("tool", True), ("tool", True), ("tool", True)], kinds
        result = await replay(trace, GatherPayer, tokenizer=None, params_type=dict, domain=chain.domain)
        assert result.divergences == [] and result.output == done["output"], result.divergences
    finally:
        await http.aclose()
        await service.cleanup()
        await executor.close()
        await store.aclose()
