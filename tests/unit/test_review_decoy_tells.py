"""Adversarial review of decoys (`supernet.node.service.decoys`): can a rational LAZY validator tell
a decoy from a real user's task without the full check (re-scoring the LLM calls)?

Decoys are what pays validators in an honest network (docs/security-parameters.md, "Paying
validators"). If a validator can pick out decoys by something cheaper than a re-score, it challenges
only those, collects every bounty it is sampled for, and never re-executes a real receipt: a cheating
node's real cheats (the rational ``answer``/``skip``/``prompt`` faults, which pass every model-free
check) go unchecked while the escrow still pays "for checking".

Real parts: Anvil with the devnet contracts (the ``network`` fixture), the node service with its real
admission, billing, worker and the real `DecoyPlanter` it builds itself (a real decoy account, funding
transfer, channel deposit, signed request, Decoy signature), real users through the real SDK
`Client`, the node's API served over real HTTP (uvicorn) so the planter's own client reaches it; the
real SmolLM2 tokenizer and chat template, the node's real `FaultInjector` (built as ``app.py`` builds
it for decoys), and the validator's real model-free `check_shape`. FAKE: the kernel
(`node_fixtures.FakeExecutor`, serving the registered test model id): the decoy fault fires inside
the kernel's dispatcher, so the fault tests apply the node's own injector to tokenised chat calls
(prompt from the real chat template, honest output ending in the EOS the engine keeps) instead.

Found:

- HIGH, FIXED: the decoy fault is a public function of the task id
  (`test_defence_the_decoy_fault_is_predictable_from_the_task_id_alone`). ``app.py:86`` builds the
  decoy injector as ``FaultInjector()`` (seed 0) and ``faults.py`` seeds the corruption with
  ``random.Random(f"{seed}:{task_id}:{call}")``: anyone can replay the RNG from the receipt's
  ``requestHash`` and the trace's ids and see whether the call carries exactly the corruption a
  decoy would. Measured: 92 % of decoys flagged, 2 % of honest calls, with a few microseconds and no
  model per call (a re-score of only the flagged 2 % removes the false alarms). A lazy validator
  thus takes every bounty and never checks a real receipt. Now the decoy injector's seed comes
  from the node's key (`decoys.decoy_faults`, built by ``app.py``).
- MEDIUM, FIXED: decoys fail the validator's own model-free shape check
  (`test_defence_a_decoy_fails_the_model_free_shape_check`). ``_corrupt_tokens`` (faults.py) draws
  the new token uniformly from prompt and output ids and may hit the last position: the chat
  template's ``<|im_end|>`` lands mid-output ("a stop token before the end") or the final EOS is
  replaced (``finish_reason="stop"`` with no stop token: cut short). `check_shape` flags ~9 % of
  decoys and 0 honest calls, no model needed; a rational cheat never trips it. Now
  `_corrupt_tokens` edits like a rational cheat: an id of the output itself, never a stop token nor
  by one, never the last token (the dispatcher hands it the call's stop ids).
- MEDIUM, a known limit (documented as "not built" in "What decoys do not hide", still a full
  tell), the decoy account is funded by its node
  (`test_known_limit_a_decoy_account_is_funded_by_its_node`): one plain
  transfer from the node's address of exactly ``fee + gas price x 400 000`` to an account with no
  history, whose only transaction is the channel deposit of exactly the fee, seconds later. Tracing
  each receipt's user's first ether separates decoys from users completely (1 of 1 vs 0 of 3).
- MEDIUM, the quoting FIXED, the repeat a known limit: a decoy repeats a recent input, JSON-quoted
  (`test_known_limit_a_decoy_repeats_an_input_the_node_just_served`): ``_pick_input`` draws from
  ``db.recent_inputs(32)``, which returns the stored ``tasks.input`` column, i.e. the input's JSON
  (db.py:386-393): the decoy's input is a user's input the node served just before, wrapped in
  quotes (``'"Name a planet."'``), or with no recent input one of six public ``FALLBACK_INPUTS``.
  The trace a validator fetches anyway shows it; users' inputs did not repeat (1 of 1 vs 0 of 3).
  Now `recent_inputs` decodes the column, so a decoy sends the input as its user did; that it
  repeats a recent one is the documented limit (operators give ``[decoys] inputs`` to avoid it).
- LOW, the account is fresh and used once (nonce 1, never another task), always ``chat``, the
  node's advertised fee, a deposit of exactly one fee: each matches a default SDK user's first task
  (`test_defence_the_decoys_signed_request_is_a_default_sdk_users_first_request` passes), so they
  only sharpen the funding tell (an account whose whole life is one task).

Checked and holding:

- Bounty denial by reveal timing: a node that does not reveal a found decoy in the vote window is
  voted fraud and slashed (1 ether, challenger reward 0.2 ether > the 0.045 bounty), so withholding
  the reveal costs it more than paying; ``revealDecoy`` pays ``min(DECOY_BOUNTY, escrow)`` and the
  planter plants only while the escrow covers every open decoy plus one.
- Fee, agent, nonce of the signed request: those of a default SDK user's first task (the defence
  test above).
- Unfindable decoys on purpose: nothing on chain checks that a node plants decoys at all (``[decoys]
  enabled = false`` or faults inside the tolerance look the same); the escrow never returns to the
  node, so withholding findable decoys gains it nothing but the validators' exit (by design: V3 makes
  planting findable decoys the node's best use of the escrow).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from chain_fixtures import MODEL_ID, NODE_STAKE, Actors
from eth_account.signers.local import LocalAccount
from node_fixtures import FakeExecutor
from supernet.node.faults import Generation
from supernet.node.llm.tokenizer import Tokenizer
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import NodeSettings
from supernet.node.service.decoys import DECOY_GAS_WEI_FACTOR, FALLBACK_INPUTS, decoy_account, decoy_faults
from supernet.node.service.runner import NodeService
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import dev_account
from supernet.sdk.client import Client
from supernet.sdk.store.embedded import in_process_client
from supernet.validator.llm_check import check_shape
from supernet.validator.trace_view import LLMCall

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(60)]

USER_INDICES = (10, 11, 12)
"""Dev accounts with no channel in the `network` fixture: real users of the served node."""
USER_INPUTS = ("Name a planet.", "What is two plus two?", "Write a haiku about rain.")


# -- a real node service with its own DecoyPlanter, served over HTTP ---------------------------------


@dataclass
class RegisteredModelExecutor(FakeExecutor):
    """FAKE kernel (`FakeExecutor`) that serves the model id the `network` fixture registered."""

    def model_ids(self) -> list[str]:
        return ["0x" + MODEL_ID.hex()]


@dataclass
class Served:
    service: NodeService
    chain: Contracts
    url: str
    node: LocalAccount


@pytest_asyncio.fixture
async def served(tmp_path: Path, network: Contracts, actors: Actors) -> AsyncIterator[Served]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    bounty = network.payments.decoy_bounty()
    store = in_process_client(tmp_path / "store")
    cfg = NodeSettings.load(
        None,
        data_dir=tmp_path / "data",
        identity={"private_key": "0x" + bytes(actors.node.key).hex()},
        api={"host": "127.0.0.1", "port": port},
        chain={"auto_register": True, "stake_wei": NODE_STAKE},  # syncs the endpoint to this port
        batch={"max_size": 1, "max_age_s": 0.05},
        redeem={"interval_s": 3600},
        decoys={"share": 0.5, "escrow_wei": 3 * bounty, "interval_s": 3600},
    )
    chain = Web3Chain(network, actors.node)
    faults = decoy_faults(bytes(actors.node.key))  # as app.py builds it for a node that plants decoys
    service = NodeService(cfg, RegisteredModelExecutor(), actors.node, store, chain, faults=faults)
    await service.setup()
    assert service.app is not None and service.decoys is not None
    server = uvicorn.Server(uvicorn.Config(service.app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):  # uvicorn has no startup event, only this flag
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield Served(service, network, f"http://127.0.0.1:{port}", actors.node)
    finally:
        server.should_exit = True
        await serving
        await service.cleanup()
        await store.aclose()


async def users_then_a_decoy(s: Served, tmp_path: Path) -> tuple[list[tuple[str, str]], str, str]:
    """Three real users each run one task at the node, then the node's own planter plants one
    decoy. Returns ``[(user address, task id)]``, the decoy's task id and its account's address."""
    users = []
    for index, text in zip(USER_INDICES, USER_INPUTS, strict=True):
        account = dev_account(index)
        async with Client(s.chain.as_account(account), state_dir=tmp_path / f"u{index}") as client:
            result = await client.submit_task(text, node_url=s.url)
        users.append((account.address, result.task_id))
    planter = s.service.decoys
    assert planter is not None
    decoy_id = await planter.plant_once()
    assert decoy_id is not None, "the planter plants at share 0.5 after three tasks"
    record = s.service.ctx.db.decoy(decoy_id) if s.service.ctx is not None else None
    assert record is not None
    decoy = decoy_account(bytes(s.node.key), int(record["account_index"]))
    return users, decoy_id, decoy.address


def first_funder(w3: Any, who: str, head: int) -> tuple[str | None, int]:
    """What a lazy validator reads per receipt's user: who sent it its first ether in a plain
    transfer (``None``: not one in the chain's history, e.g. genesis-funded), and how much."""
    for number in range(1, head + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["to"] is not None and tx["to"].lower() == who.lower() and tx["value"] > 0:
                if len(bytes(tx["input"])) == 0:
                    return str(tx["from"]), int(tx["value"])
    return None, 0


async def test_known_limit_a_decoy_account_is_funded_by_its_node(served: Served, tmp_path: Path) -> None:
    """Tell: each receipt's user's first ether. The planter's `_fund` sends it from the node's own
    address (decoys.py `_fund`, ``chain.send_ether``), exactly ``fee + gas price x 400 000``, to an
    account with no history. SAFE would be: being funded by the node does not separate decoys from
    users. Known limit (docs/security-parameters.md, "What decoys do not hide"): funding decoys
    through an address not linked to the node is not built, so this asserts that the tell is there
    (a change that removes it turns this into a defence)."""
    users, _, decoy_addr = await users_then_a_decoy(served, tmp_path)
    w3 = served.chain.w3
    head = int(w3.eth.block_number)
    node = served.node.address.lower()
    funded_by_node, first_value = {}, {}
    for who in [u for u, _ in users] + [decoy_addr]:
        funder, first_value[who] = first_funder(w3, who, head)
        funded_by_node[who] = funder is not None and funder.lower() == node
    deposited = served.chain.payments.channel(decoy_addr, served.node.address).deposited
    decoy_flag = funded_by_node[decoy_addr]
    user_flags = [funded_by_node[u] for u, _ in users]
    assert int(w3.eth.get_transaction_count(decoy_addr)) == 1, "the decoy account's only tx: its deposit"
    assert decoy_flag and not any(user_flags), (
        f"a validator tracing each user's first ether finds the decoy: funded by the node "
        f"{served.node.address} ({decoy_flag}), users {user_flags}; the decoy account's whole history "
        f"is that transfer ({first_value[decoy_addr]} wei: fee + gas price x {DECOY_GAS_WEI_FACTOR}) and "
        f"one deposit of exactly the fee ({deposited} wei)"
    )


async def test_known_limit_a_decoy_repeats_an_input_the_node_just_served(
    served: Served, tmp_path: Path
) -> None:
    """Tell: the task's input (in its trace, which a validator fetches anyway; no model). `_pick_input`
    draws from ``db.recent_inputs(32)``, which returns the column ``tasks.input`` as stored, i.e. the
    input's JSON (db.py `recent_inputs`): the decoy's input is a user's recent input wrapped in JSON
    quotes, ``'"Name a planet."'`` (with no recent input, one of the six public `FALLBACK_INPUTS`).
    SAFE would be: an input that repeats (or JSON-quotes) one the node just served is no likelier on a
    decoy than on a user's task. FIXED: the quoting (`Database.recent_inputs` decodes the column:
    the decoy sends the input exactly as its user did). Known limit: the repeat itself, with no
    ``[decoys] inputs`` of the operator's (docs/security-parameters.md, "What decoys do not hide")."""
    users, decoy_id, _ = await users_then_a_decoy(served, tmp_path)
    db = served.service.ctx.db if served.service.ctx is not None else None
    assert db is not None
    seen = [str(db.task(tid).input) for _, tid in users]  # type: ignore[union-attr]
    decoy_input = str(db.task(decoy_id).input)  # type: ignore[union-attr]

    def unquoted(text: str) -> str:
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, str):
                return value
        return text

    def repeats(text: str, earlier: list[str]) -> bool:
        return unquoted(text) in earlier or text in FALLBACK_INPUTS

    users_repeating = sum(repeats(text, seen[:i]) for i, text in enumerate(seen))
    assert decoy_input in seen, (
        f"the decoy's input {decoy_input!r} is one of {seen} exactly, not quoted again"
    )
    assert repeats(decoy_input, seen) and users_repeating == 0  # the known limit: it repeats one


async def test_defence_the_decoys_signed_request_is_a_default_sdk_users_first_request(
    served: Served, tmp_path: Path
) -> None:
    """What the request itself shows (fee, agent, nonce) does not separate a decoy from a user's
    first task through the SDK's defaults: the planter signs with the same `Client` (the node's
    advertised fee, ``chat``, nonce 1). It matches only *first* requests of *default* users, so it
    sharpens the funding tell (an account used once) rather than being one on its own."""
    users, decoy_id, _ = await users_then_a_decoy(served, tmp_path)
    db = served.service.ctx.db if served.service.ctx is not None else None
    assert db is not None

    def shown(task_id: str) -> tuple[int, int, str, int]:
        row = db.task(task_id)
        assert row is not None
        return row.max_fee, row.fee, row.agent, row.nonce

    assert {shown(tid) for _, tid in users} == {shown(decoy_id)}


# -- the fault itself: what the trace shows a validator ---------------------------------------------

ANSWERS = (
    "The water cycle moves water between the oceans, the air and the land: it evaporates, condenses "
    "into clouds and falls back as rain or snow. It then flows into rivers and seas, and starts again.",
    "1. Keep the subject line short and in the imperative mood.\n2. Explain why the change was made, "
    "not only what changed.\n3. Make one logical change per commit.",
    "A list is mutable, so you can add, remove or change its items, while a tuple is immutable once "
    "created. Tuples are often used for fixed records and can be dictionary keys.",
    "A hash function takes any input and returns a fixed-size value, like a fingerprint. The same "
    "input always gives the same output, and a tiny change gives a very different one.",
    'How about "Rise & Crumb"? It is short, easy to remember and hints at fresh bread every morning.',
    "Unit tests catch bugs early, close to where they were introduced, and they let you refactor with "
    "confidence because they tell you at once when behaviour changes.",
)
"""Honest answers to `FALLBACK_INPUTS` (what SmolLM2 writes, in shape: text, then the EOS it keeps)."""
CALLS = 300


@pytest.fixture(scope="module")
def chat_calls(smollm2_dir: Path) -> list[tuple[str, Generation, Generation]]:
    """``CALLS`` chat calls as the kernel records them: ``(task id, honest, decoy)``; the decoy is
    the honest call through the node's own decoy injector (`decoy_faults` of its key, as ``app.py``
    builds it), with the stop ids the dispatcher hands it."""
    tok = Tokenizer(smollm2_dir)
    eos = tok.eos_token_id
    assert eos is not None
    faults = decoy_faults(bytes(dev_account(1).key))
    rnd = random.Random(15)
    out = []
    for j in range(CALLS):
        q = j % len(FALLBACK_INPUTS)
        prompt = tuple(tok.apply_chat_template([{"role": "user", "content": FALLBACK_INPUTS[q]}]))
        ids = (*tok.encode(ANSWERS[q]), eos)
        honest = Generation(prompt_ids=prompt, output_ids=ids, logprobs=(-0.1,) * len(ids), stop_ids=(eos,))
        task_id = "0x" + rnd.randbytes(32).hex()
        faults.decoys.add(task_id)  # what `DecoyPlanter.plant_once` does before sending the task
        out.append((task_id, honest, faults.on_generation(f"{task_id}:0", honest)))
    assert all(d.output_ids != h.output_ids for _, h, d in out), "every decoy call is corrupted"
    return out


def looks_like_a_decoy(
    task_id: str, call: int, prompt_ids: tuple[int, ...], output_ids: tuple[int, ...]
) -> bool:
    """The lazy validator's screen: replay the decoy injector's RNG (seed 0, keyed by the public
    task id and call index) and see whether each position it would corrupt holds the token it would
    draw. The pool is rebuilt from the corrupted call, so a drawn index may be off by one."""
    rng = random.Random(f"0:{task_id}:{call}")
    pool = sorted(set(prompt_ids) | set(output_ids))
    k = min(len(output_ids), rng.randint(1, 3))
    for pos in rng.sample(range(len(output_ids)), k=k):
        i = rng.randrange(len(pool) - 1) if len(pool) > 1 else 0
        if output_ids[pos] not in pool[max(0, i - 1) : i + 2]:
            return False
    return True


def test_defence_the_decoy_fault_is_predictable_from_the_task_id_alone(
    chat_calls: list[tuple[str, Generation, Generation]],
) -> None:
    """SAFE: without the model, a screen flags decoys no more often than honest calls."""
    on_decoys = sum(looks_like_a_decoy(t, 0, d.prompt_ids, d.output_ids) for t, _, d in chat_calls) / CALLS
    on_honest = sum(looks_like_a_decoy(t, 0, h.prompt_ids, h.output_ids) for t, h, _ in chat_calls) / CALLS
    assert on_decoys <= on_honest + 0.05, (
        f"replaying FaultInjector()'s seed-0 RNG from the task id flags {on_decoys:.0%} of decoys and "
        f"{on_honest:.0%} of honest calls, no model needed: a lazy validator challenges only those"
    )


def test_defence_a_decoy_fails_the_model_free_shape_check(
    chat_calls: list[tuple[str, Generation, Generation]],
) -> None:
    """SAFE: the validator's `check_shape` (lengths, stop tokens, finish reason: no model) flags a
    decoy no more often than an honest call (never): a decoy is found only by re-scoring."""
    eos = chat_calls[0][1].output_ids[-1]

    def flagged(g: Generation) -> bool:
        call = LLMCall(
            0, "m", g.prompt_ids, g.output_ids, g.logprobs, None, 0.0, 1.0, 0, 256, (eos,), "stop", None
        )
        return bool(check_shape(call, (eos,)))

    on_decoys = sum(flagged(d) for _, _, d in chat_calls) / CALLS
    on_honest = sum(flagged(h) for _, h, _ in chat_calls) / CALLS
    assert on_honest == 0
    assert on_decoys <= 0.01, (
        f"check_shape alone flags {on_decoys:.0%} of decoys (a stop token from the prompt mid-output, "
        f"or the final EOS replaced) and {on_honest:.0%} of honest calls"
    )
