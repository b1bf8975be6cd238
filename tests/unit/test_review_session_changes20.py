"""Adversarial review of three node changes of this session (41d7a28, 15e739f): the database binds
the EIP-712 domain it signs for (`Database.bind_domain`, `runner.open_bound`), half a chain
configuration is refused (cli.py, config.py), and `Batcher.commit_risk` (a node whose commits keep
failing answers ``/healthz`` 503 ``commits_at_risk`` and refuses new paid tasks).

Real parts: a real Anvil with the compiled contracts (``network``), the real node service as
tests/unit/test_review_operator_tools.py builds it (`NodeService` with its `Database`, `Batcher`,
`Web3Chain`; its helpers `_start`, `_stop`, `_done_task`, `_run_batcher_for` imported), the real
embedded content store. The task kernel is the FAKE executor of tests/node_fixtures.py (the model
plays no part in commits or the domain binding).

Found:

1. HIGH  A node moving from dev mode onto a chain keeps its dev-mode database, and the binding
   lets it (`Database.bind_domain`, node/supernet/node/service/db.py: ``bound is None`` and a
   chain domain: the domain is recorded, whatever the file holds; ``chain_history`` is only asked
   of a dev-mode start). Dev mode marks each batch "committed" under its local id as the chain
   batch id (`Batcher.commit`, ``if self.chain is None: chain_id = batch.id``), so the dev batches
   hold chain batch ids 1, 2, ...: the very ids the chain gives the node's first real batches
   (`TaskManager._nextBatchId` starts at 1). `Database.batch_by_chain_id` and `receipt_at` (what
   `Availability` answers manifest claims and availability challenges with) then resolve the
   node's real chain batch to the dev batch: it would post the dev batch's receipts against the
   chain batch's root (the answer fails, the claim goes unanswered: slashed) and serve a dev trace
   for an availability challenge. And the dev receipts still waiting for their batch (signed under
   dev mode's domain, Payments 0x0) are cut into the node's first on-chain batch: a committed
   receipt whose user's signature does not hold under the chain's domain.
   (test_attack_a_dev_mode_database_carried_onto_a_chain_answers_for_the_wrong_batch, now
   test_defence_a_dev_mode_database_carried_onto_a_chain_is_refused. FIXED: a start on a chain
   over an unbound file that holds receipts and no chain life, dev mode's, is refused in one line,
   `Database.bind_domain`)
   Fix by design: bind dev mode too (record a dev "domain", chain id and 0x0) and refuse a chain
   start over a file bound to dev mode, or over an unbound file that holds receipts (the chain
   start cannot keep dev promises); at the least, never look batches up by a chain batch id that
   was not assigned by a transaction (dev batches with ``chain_batch_id`` NULL, or a column of
   their own).

Checked and holding:

- ``commits_at_risk`` ends as soon as a commit lands: the wallet emptied, the commit fails for
  want of gas, ``/healthz`` answers 503 ``commits_at_risk`` and both admission routes (``POST
  /v1/tasks`` and the OpenAI drop-in ``POST /v1/chat/completions``) refuse 503 ``commits_at_risk``;
  the refusal does not stop the batcher's retries (it retries every ``RETRY_S`` on its own timer,
  no new receipt needed), so once the wallet is fed the next round (within ``RETRY_S``, 5 s)
  commits the batch on chain and the node is ``ok`` and admits a paid task again
  (test_defence_commits_at_risk_ends_with_the_first_commit_and_covers_the_drop_in_route).
- A single failed round (an RPC that errors once, a receipt younger than ``commit_margin_s``)
  does not put the node at risk: the first failure with a fresh receipt leaves ``/healthz`` 200
  ``ok``, and its RPC URL's key stays out of the recorded error (same test, before the wallet is
  emptied; the RPC's one error is a FAKE fault handed to `Batcher._failed`, the one part not caused
  for real: read in `commit_risk`, only an
  `InsufficientFundsError` is at risk at once; every other failure waits 2 * max_age_s + 60 s).
- Read, not tested: a start over a file bound to another Payments contract on the same chain id is
  refused (`bind_domain` compares chain id and address); a devnet redeployed at the same addresses
  after an Anvil restart passes the binding (same domain) by design; ``reason`` goes through
  `supernet.sdk.redact.described` (URLs cut to scheme and host, a bare ``url:`` path hidden), and
  `_wallet_short`'s text names only the node's public address and amounts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from chain_fixtures import Actors
from node_fixtures import signed_task
from supernet.node.service.batcher import RETRY_S
from supernet.node.service.models import TaskStatus
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import set_balance
from supernet.sdk.store import StoreClient
from test_review_operator_tools import (
    FEE,
    Started,
    _done_task,
    _roots_committed_by,
    _run_batcher_for,
    _start,
    _stop,
    store,  # noqa: F401  (the embedded store fixture)
)

ETHER = 10**18


async def _done_dev_task(node: Started, actors: Actors, text: str, cumulative: int) -> str:
    """`_done_task` under the node's own domain (dev mode signs for chain id and Payments 0x0)."""
    body = signed_task(actors.users[0], actors.node.address, node.service.domain, text, cumulative=cumulative)
    r = await node.http.post("/v1/tasks", json=body)
    assert r.status_code == 202, r.text
    tid = str(r.json()["id"])
    assert node.service.ctx is not None
    await node.service.ctx.worker.wait(tid)
    task = node.db.task(tid)
    assert task is not None and task.status is TaskStatus.DONE, task
    return tid


# ------------------------------------------------------------------------------------------------
# 1. HIGH: a dev-mode database carried onto a chain resolves the node's chain batches to dev ones
# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_a_dev_mode_database_carried_onto_a_chain_is_refused(
    network: Contracts,
    actors: Actors,
    tmp_path: Path,
    store: StoreClient,  # noqa: F811
) -> None:
    """Was an attack (HIGH; FIXED, see the module). An honest operator tries the node in dev mode
    (no ``--rpc``/``--deployment``), then starts it on the chain with the same ``data_dir``: the
    binding recorded the chain's domain and let it
    run. Dev mode "committed" its first batch as chain batch 1 (its local id); the node's first
    real batch is chain batch 1 too. Safe: the chain start is refused over the dev file, or the
    node's chain batch resolves to itself (what `Availability` answers claims with) and no dev
    receipt reaches the chain."""
    data = tmp_path / "node"
    dev = await _start(network, actors, data, store, on_chain=False)
    try:
        dev_tid = await _done_dev_task(dev, actors, "tried in dev mode", FEE)
        assert dev.service.batcher is not None
        await dev.service.batcher.flush()  # its "commit": local, chain_batch_id = local id
        left_tid = await _done_dev_task(dev, actors, "served just before the move", 2 * FEE)
        dev_receipt = dev.db.receipt(dev_tid)
        dev_batch = dev.db.batch(dev_receipt.batch_id)
        assert dev_batch is not None and dev_batch.status == "committed", dev_batch
    finally:
        await _stop(dev)

    refused: BaseException | None = None
    try:
        node = await _start(network, actors, data, store, on_chain=True, max_age_s=0.2)
    except Exception as exc:  # the safe outcome: the dev file is refused on the chain
        refused = exc
    if refused is not None:
        return
    try:
        tid = await _done_task(node, network, actors, "the first paid task on chain", 3 * FEE)
        await _run_batcher_for(node, 3.0)
        row = node.db.receipt(tid)
        assert row is not None and row.batch_id is not None, "the chain task's receipt was batched"
        ours = node.db.batch(row.batch_id)
        assert ours is not None and ours.status == "committed" and ours.chain_batch_id is not None, ours
        assert ours.root in _roots_committed_by(network, actors.node.address), "its commit is on chain"
        looked_up = node.db.batch_by_chain_id(ours.chain_batch_id)  # `Availability._answer_manifest`
        entry = node.db.receipt_at(ours.chain_batch_id, 0)  # `Availability._answer`
        left = node.db.receipt(left_tid)
        left_batch = node.db.batch(left.batch_id) if left is not None and left.batch_id is not None else None
    finally:
        await _stop(node)

    problems = []
    if looked_up is None or looked_up.id != ours.id:
        problems.append(
            f"chain batch {ours.chain_batch_id} (local {ours.id}, root {ours.root}) resolves to local batch "
            f"{looked_up and looked_up.id} (root {looked_up and looked_up.root}, the dev batch): a manifest "
            f"claim on it would be answered with the dev batch's receipts, entry 0 of an availability "
            f"challenge is task {entry and entry.task_id} (dev task {dev_tid})"
        )
    if left_batch is not None and left_batch.root in _roots_committed_by(network, actors.node.address):
        problems.append(
            f"dev task {left_tid}'s receipt, signed under Payments 0x0, was committed on chain in batch "
            f"{left_batch.chain_batch_id}"
        )
    assert not problems, "a dev-mode database was taken onto the chain:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# commits_at_risk: ends with the first commit, covers the drop-in route, a single failure is not it
# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_commits_at_risk_ends_with_the_first_commit_and_covers_the_drop_in_route(
    network: Contracts,
    actors: Actors,
    tmp_path: Path,
    store: StoreClient,  # noqa: F811
) -> None:
    """An unlucky honest operator: one round fails with a fresh receipt (not at risk), then the
    wallet runs dry (at risk at once: /healthz 503, both admission routes refused), then is fed:
    the batcher's own retry (``RETRY_S``) commits on chain and the node takes tasks again. The
    RPC's single error is a FAKE fault handed to `Batcher._failed` (instrumentation)."""
    node = await _start(network, actors, tmp_path / "node", store, on_chain=True, max_age_s=0.2)
    funded = network.w3.eth.get_balance(actors.node.address)
    try:
        batcher = node.service.batcher
        assert batcher is not None
        # a round that fails once (the RPC errors) with a receipt seconds old: not at risk
        await _done_task(node, network, actors, "first", FEE)
        batcher._failed(ConnectionError("POST https://rpc.example/v3/0123456789abcdef: reset"))
        once = await node.http.get("/healthz")
        assert once.status_code == 200 and once.json()["status"] == "ok", once.text
        assert "0123456789abcdef" not in (batcher.health.last_error or "")

        set_balance(network.w3, actors.node.address, 0)
        running = asyncio.create_task(batcher.run_forever())  # as `NodeService.run_forever` runs it
        try:
            await asyncio.sleep(2.0)  # its commit fails: no ether for gas
            assert node.db.unfinished_batches(), "the commit cannot have landed"
            health = await node.http.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "commits_at_risk", health.text
            body = signed_task(
                actors.users[0], actors.node.address, network.domain, "second", cumulative=2 * FEE
            )
            refused = await node.http.post("/v1/tasks", json=body)
            assert refused.status_code == 503 and "commits_at_risk" in refused.text, refused.text
            chat = await node.http.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "stream": True}
            )
            assert chat.status_code == 503 and "commits_at_risk" in chat.text, chat.text

            set_balance(network.w3, actors.node.address, funded or ETHER)
            await asyncio.sleep(RETRY_S + 1.5)  # no new receipt: its own retry timer commits
            assert not node.db.unfinished_batches(), "the retry committed the batch"
        finally:
            batcher.stop()
            await asyncio.wait_for(running, 30)
        healthy = await node.http.get("/healthz")
        admitted = await node.http.post("/v1/tasks", json=body)
    finally:
        await _stop(node)
    assert healthy.status_code == 200 and healthy.json()["status"] == "ok", healthy.text
    assert admitted.status_code == 202, admitted.text
