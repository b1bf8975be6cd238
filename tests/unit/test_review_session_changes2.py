"""Adversarial review of the session's changes (66c073e..d68c13f): the explorer's signed-receipt rule
and reorg handling, the expired-seed rule's validator side, the config sections that refuse unknown
keys, and the memory/storage pins. Real Anvil and contracts (``network``), the real embedded content
store, the real `Indexer`, the real kernel with the real embedder, the real settings models.

Tried, and what was found:

1. Explorer, a receipt counts only if ``ManifestEntry.signed_by_user``:
   - FIXED (only the first signed receipt of a request counts) one request a real user signed
     once counted as many tasks: a node commits
     it twice in one batch and again in a later one; each copy is "signed", so the node's and the
     network's task and fee totals count it three times and the user's page lists three tasks
     (`test_known_limit_one_signed_request_counts_as_a_task_in_every_copy`).
   - FIXED (a receipt counts only within its signed request) the fee the node writes in a
     signed receipt was counted whatever the
     user's signed ``maxFee``: a 1e-4 ETH request becomes a 1,000 ETH "fee" in the network's and
     the node's totals, under the real user's name
     (`test_known_limit_a_signed_receipt_counts_any_fee_the_node_writes`).
   - holds: a real user's request signed for another node, or for another deployment (chain id,
     Payments address), committed by a node that replays it, is an unsigned claim
     (`test_defence_requests_signed_for_another_node_or_deployment_are_claims`).
   - holds: a reorg that replaces a batch (same id, another node's content) keeps none of the
     orphaned receipts, and every total, operator row and receipt equals a fresh index of the new
     chain (`test_defence_a_reorg_that_replaces_a_batch_matches_a_fresh_index`).
2. Expired seeds: FIXED (a batch past its window is finished unchecked) a validator that reaches a batch
   after its seed expired
   verifies every entry (512 at most) even when the batch's challenge window closed long ago and no
   challenge can be sent; batches are processed oldest first, so a validator that fell behind by the
   seed's lifetime spends count/sample-rate times its normal work on batches it can no longer act on
   before it reaches the fresh ones (`test_defence_a_batch_past_its_window_is_not_checked`, now in
   tests/unit/test_seed_expiry.py).
   Contract side (reading only, no test): a node cannot force expiry (nobody can stop a reader
   inside the seed's lifetime) and gains nothing from it: an ally's decoy bounty is the node's own
   escrow, a fraud slash costs it more than its ally's reward, and the reward still needs stake
   placed before the commit.
3. Config sections forbid unknown keys: holds. Every key of node/node.example.toml and
   validator/validator.sample.toml (commented ones included) is a field, and the environment of
   docker/compose.yaml's node and validator loads (`test_defence_documented_configs_still_load`).
4. Memory/storage pins:
   - FIXED (a revert never unpins content) pins are a set, not counted: a
     memory entry (or a file) is content-addressed without its namespace, so another user who writes
     the same bytes in a task that then fails has the revert drop *the* pin of the victim's entry
     (`NamespaceRoots._unpin_since` unpins the content of every undone write the namespace had not
     seen before). The victim's live root and receipted trace still link it; once the store
     collects it (Kubo GC) the victim's memory is broken and the node cannot serve the data its
     committed trace names (`test_known_limit_another_users_failed_task_unpins_a_victims_entry`).
   - holds: the same bytes written twice in one namespace, the second time by a failed task, keep
     their pin (`test_defence_a_failed_rewrite_in_the_same_namespace_keeps_the_first_pin`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chain_fixtures import Actors
from sqlalchemy import select
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Operator, Receipt
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import NodePolicy, namespace_of
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.service.config import NodeSettings
from supernet.sdk.chain import Contracts, hash_task_request, sign_task_request
from supernet.sdk.chain.anvil import mine, revert, snapshot
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.receipts import sign_receipt
from supernet.sdk.formats import ManifestEntry
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import EmbeddedStore, create_app
from supernet.sdk.store.errors import PinError
from supernet.validator.config import ValidatorSettings

from tests.embedder import SharedMiniLM
from tests.integration.test_explorer_indexer import make_indexer
from tests.unit.test_review_explorer import ETH, FEE, commit, make_entry
from tests.unit.test_review_memory_storage import Jot, spec
from tests.unit.test_validator_attacks import registry
from tests.unit.test_validator_attacks3 import FakeEngine

REPO = Path(__file__).resolve().parents[2]


# -- 1. explorer: what counts as a task ---------------------------------------------------------------


def refee(entry: ManifestEntry, node: Any, fee: int) -> ManifestEntry:
    """``entry`` with the node's receipt rewritten to ``fee`` (and re-signed by the node); the user's
    request and its signature are untouched."""
    receipt = dataclasses.replace(entry.receipt, fee=fee)
    return dataclasses.replace(
        entry, receipt=receipt, leaf=receipt.leaf(), signature=sign_receipt(receipt, node)
    )


@pytest.mark.anvil
def test_defence_one_signed_request_counts_as_one_task_however_many_copies(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """DEFENCE (was a known limit; fixed: only the first signed receipt of a request counts, later
    copies are claims). KNOWN LIMIT (false activity in a real user's name). ``users[0]`` signs one request for
    ``node``. The node commits the same entry twice in one batch and once more in a later batch:
    each copy passes `ManifestEntry.signed_by_user` (the digest, the node and the signer are all
    right), so the explorer counts three tasks and three fees for one request, and the user's page
    lists the one task three times. Nothing on chain stops a request hash from being committed
    again (the receipts are leaves of independent trees). A node inflates its task count and fees
    with every real request it ever got, in its real users' names (with a sybil user it can make
    requests of its own, but not in the name of customers who make it look trusted).

    Cause: explorer/supernet/explorer/apply.py `attach_manifest` / `count_receipts` count every
    signed entry; nothing keys a task by its request hash.

    Fix (by design): a task is a request hash: count (tasks, fees, the user's page) only the first
    signed receipt of a request hash (by batch id, then index), and keep later copies as the node's
    "duplicate" claims (a unique partial index on receipts(request_hash) where counted)."""
    c, user = network, actors.users[0]
    entry = make_entry(c, actors.node, user.address, store_url, nonce=41, signed_by=user)
    first = commit(c, actors.node, [entry, entry], store_url)
    second = commit(c, actors.node, [entry], store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with Session(ix.engine) as s:
        rows = list(s.scalars(select(Receipt).where(Receipt.batch_id.in_((first, second)))))
        assert len(rows) == 3 and [r.signed for r in sorted(rows, key=lambda r: (r.batch_id, r.idx))] == [
            True,
            False,
            False,
        ]
        assert len({r.request_hash for r in rows}) == 1  # one request ...
        totals = queries.totals(s)
        assert (totals["tasks"], totals["fees"], totals["claims"]) == (1, FEE, 2)  # ... one task
        node = s.get(Operator, actors.node.address)
        assert node is not None and (node.tasks, node.fees) == (1, FEE)
        page = queries.address(s, user.address)["receipts"]
        assert len(page) == 1


@pytest.mark.anvil
def test_defence_a_signed_receipt_counts_only_within_its_signed_request(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """DEFENCE (was a known limit; fixed: `signed_by_user` requires the receipt within the request:
    its model, its input, a fee at most its maxFee). KNOWN LIMIT (false fees in a real user's name).
    ``users[1]`` signs a request for ``node``
    with ``maxFee`` = 1e-4 ETH. The node rewrites the receipt's fee to 1,000 ETH (it signs the
    receipt; the user's request and signature are untouched): `signed_by_user` checks the digest,
    the node, the user and the signature, not the receipt against the request, so the entry is a
    task and its 1,000 ETH count in the node's and the network's "Fees" and on the user's page (the
    task page alone fails "request maxFee"). The same holds for a receipt whose model or input
    hash is not the signed request's.

    Cause: sdk/supernet/sdk/formats/manifest.py `ManifestEntry.signed_by_user` does not compare
    ``receipt.fee`` with ``request.max_fee`` (nor ``model_id``/``input_hash`` with the request's),
    and apply.py `count_receipts` sums ``receipt.fee``.

    Fix (by design): one ingest check shared with `supernet.sdk.client.verify._check_request`: an
    entry is a task only if its receipt is within its signed request (model, input, fee <= maxFee);
    better, earned fees from on-chain ``Redeemed`` only (what users actually paid)."""
    c, user = network, actors.users[1]
    honest = make_entry(c, actors.node, user.address, store_url, nonce=42, signed_by=user)
    assert honest.request.max_fee == FEE
    inflated = refee(honest, actors.node, 1000 * ETH)
    commit(c, actors.node, [inflated], store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with Session(ix.engine) as s:
        (row,) = s.scalars(select(Receipt))
        assert not row.signed and row.fee == 1000 * ETH > int(row.request["maxFee"])
        totals = queries.totals(s)
        assert (totals["tasks"], totals["fees"], totals["claims"]) == (0, 0, 1)
        node = s.get(Operator, actors.node.address)
        assert node is not None and node.fees == 0
        assert queries.address(s, user.address)["receipts"] == []


@pytest.mark.anvil
def test_defence_requests_signed_for_another_node_or_deployment_are_claims(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """DEFENCE. node2 replays requests real users signed elsewhere: one signed for ``node`` (node2
    copies it whole, task id included), one signed on another chain id and one for another Payments
    contract (node2 writes the task id the user computed there, or this deployment's digest of the
    same request). None is a task: the digest under this deployment's domain, the node it names and
    the recovered signer must all match (`ManifestEntry.signed_by_user`)."""
    c, (u0, u1, u2) = network, actors.users
    foreign_node = make_entry(c, actors.node, u0.address, store_url, nonce=50, signed_by=u0)
    stolen = dataclasses.replace(
        refee(foreign_node, actors.node2, foreign_node.receipt.fee), request=foreign_node.request
    )
    other_chain = Domain(c.domain.chain_id + 1, c.domain.verifying_contract)
    other_contract = Domain(c.domain.chain_id, "0x" + "77" * 20)
    replays = [stolen]
    for i, (user, domain) in enumerate(((u1, other_chain), (u2, other_contract))):
        base = make_entry(c, actors.node2, user.address, store_url, nonce=60 + i)
        signature = sign_task_request(base.request, domain, user)
        for task_id in (hash_task_request(base.request, domain), hash_task_request(base.request, c.domain)):
            receipt = dataclasses.replace(base.receipt, request_hash=task_id)
            replays.append(
                dataclasses.replace(
                    base,
                    receipt=receipt,
                    leaf=receipt.leaf(),
                    signature=sign_receipt(receipt, actors.node2),
                    request_signature=signature,
                )
            )
    batch_id = commit(c, actors.node2, replays, store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with Session(ix.engine) as s:
        rows = list(s.scalars(select(Receipt).where(Receipt.batch_id == batch_id)))
        assert len(rows) == 5 and not any(r.signed for r in rows)
        totals = queries.totals(s)
        assert (totals["tasks"], totals["fees"], totals["claims"]) == (0, 0, 5)
        for user in (u0, u1, u2):
            assert queries.address(s, user.address)["receipts"] == []


def index_state(engine: Any) -> tuple[dict[str, int], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the explorer shows: totals, operators' counters, every receipt."""
    with Session(engine) as s:
        ops = [
            (o.address, o.tasks, o.fees, o.batches, o.stake)
            for o in s.scalars(select(Operator).order_by(Operator.address))
        ]
        receipts = [
            (r.batch_id, r.idx, r.node, r.request_hash, r.signed, r.fee)
            for r in s.scalars(select(Receipt).order_by(Receipt.batch_id, Receipt.idx))
        ]
        return queries.totals(s), ops, receipts


@pytest.mark.anvil
def test_defence_a_reorg_that_replaces_a_batch_matches_a_fresh_index(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """DEFENCE. Batch ``b`` is node2's (a signed task) and is indexed with its receipts; a reorg
    replaces it by ``node``'s batch of the same id with other content (two unsigned claims and a
    signed task). `Indexer.check_reorg` keeps the receipts of the batches up to the fork only (ids
    grow with the chain): no receipt of the orphaned batch survives, and totals, operators and
    receipts equal those of a fresh index of the new chain."""
    c, (u0, u1, u2) = network, actors.users
    kept = commit(
        c, actors.node, [make_entry(c, actors.node, u0.address, store_url, nonce=70, signed_by=u0)], store_url
    )
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    snap = snapshot(c.w3)
    orphan = make_entry(c, actors.node2, u1.address, store_url, nonce=71, fee=7 * FEE, signed_by=u1)
    b = commit(c, actors.node2, [orphan], store_url)
    ix.catch_up()
    with Session(ix.engine) as s:
        assert s.scalar(select(Receipt.node).where(Receipt.batch_id == b)) == actors.node2.address
    revert(c.w3, snap)
    replacement = [
        make_entry(c, actors.node, u2.address, store_url, nonce=72, fee=3 * FEE),
        make_entry(c, actors.node, u2.address, store_url, nonce=73, fee=5 * FEE),
        make_entry(c, actors.node, u2.address, store_url, nonce=74, signed_by=u2),
    ]
    assert commit(c, actors.node, replacement, store_url) == b == kept + 1  # the same id, other content
    mine(c.w3, 2)
    assert ix.check_reorg()
    ix.catch_up()
    fresh = make_indexer(open_database("sqlite://"), c, store_url)
    fresh.catch_up()
    totals, ops, receipts = index_state(ix.engine)
    assert (totals, ops, receipts) == index_state(fresh.engine)
    assert [(r[0], r[2], r[4]) for r in receipts if r[0] == b] == [
        (b, actors.node.address, False),
        (b, actors.node.address, False),
        (b, actors.node.address, True),
    ]
    assert "0x" + orphan.receipt.request_hash.hex() not in {r[3] for r in receipts}
    assert (totals["tasks"], totals["fees"], totals["claims"]) == (2, 2 * FEE, 2)


# -- 2. expired seeds: the validator's side --------------------------------------------------------------


# test_defence_a_batch_past_its_window_is_not_checked moved to tests/unit/test_seed_expiry.py, where
# it shares one chain mined past the seed's lifetime with the expiry test (9,000 blocks: ~1 min each).


# -- 3. config sections forbid unknown keys ---------------------------------------------------------------


def commented_keys(path: Path) -> list[tuple[str, str]]:
    """Every ``key = value`` of a sample TOML file, commented or not, with its ``[section]``."""
    section, out = "", []
    for line in path.read_text().splitlines():
        s = line.strip()
        header = re.match(r"^#?\s*\[\[?([a-z_.]+)\]\]?\s*(#.*)?$", s)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"^#?\s*([a-z_]+)\s*=", s)
        if key:
            out.append((section, key.group(1)))
    return out


def fields_of(model: Any, section: str) -> set[str]:
    for part in [p for p in section.split(".") if p]:
        ann = model.model_fields[part].annotation
        inner = [a for a in getattr(ann, "__args__", ()) if hasattr(a, "model_fields")]
        model = inner[0] if inner else ann
    return set(model.model_fields)


def test_defence_documented_configs_still_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DEFENCE. Every config section now refuses unknown keys (`Section`). Every key the sample
    files document (commented alternatives too) is a field of its section, the sample files load
    as they are, and the environment docker/compose.yaml gives the node and the validator loads."""
    for path, model in (
        (REPO / "node/node.example.toml", NodeSettings),
        (REPO / "validator/validator.sample.toml", ValidatorSettings),
    ):
        keys = commented_keys(path)
        assert len(keys) > 10
        unknown = [(sec, k) for sec, k in keys if k not in fields_of(model, sec)]
        assert unknown == [], (path.name, unknown)
    key_file = tmp_path / "key"
    key_file.write_text("0x" + "11" * 32)
    key_file.chmod(0o600)
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    envs = {name: svc.get("environment") or {} for name, svc in compose["services"].items()}
    node_env = next(e for e in envs.values() if "SUPERNET_CHAIN__ENABLED" in e)
    validator_env = next(e for e in envs.values() if "SUPERNET_VALIDATOR_CHAIN__RPC_URL" in e)
    for name in [n for n in os.environ if n.startswith("SUPERNET_")]:
        monkeypatch.delenv(name)
    for env in (node_env, validator_env):
        for name, value in env.items():
            monkeypatch.setenv(name, str(key_file) if str(value).startswith("/run/secrets/") else str(value))
    monkeypatch.setenv("SUPERNET_DATA_DIR", str(tmp_path / "node"))
    node = NodeSettings.load(REPO / "node/node.example.toml")
    assert node.chain.enabled and node.chain.auto_register and node.store.url == "http://kubo:5001"
    validator = ValidatorSettings.from_toml(None)
    assert validator.http_port == 9100 and validator.register_stake_wei == 10**18
    doc = tomllib.loads((REPO / "validator/validator.sample.toml").read_text())
    assert (
        ValidatorSettings.from_toml(REPO / "validator/validator.sample.toml").chain.rpc_url
        == doc["chain"]["rpc_url"]
    )


# -- 4. memory and storage pins ---------------------------------------------------------------------------


class Drop(Agent):
    """Writes the files it is given, then fails if asked to."""

    agent_id = "drop"
    description = "Writes files."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for path, text in input.get("files", []):
            await ctx.storage.put(path, text)
        if input.get("fail"):
            raise RuntimeError("the agent failed after its writes")
        return "ok"


@contextlib.asynccontextmanager
async def kernel_on(store: EmbeddedStore) -> AsyncIterator[Kernel]:
    """The node's own kernel on ``store`` with the ``jot`` and ``drop`` agents."""
    app = create_app(store)
    async with StoreClient("http://embedded-store", transport=httpx.ASGITransport(app=app)) as client:
        kernel = Kernel(
            FakeEngine(),
            client,
            KernelConfig(node_policy=NodePolicy()),
            agents=registry((Jot, Drop)),
            embedder=SharedMiniLM(),
        )
        await kernel.setup()
        try:
            yield kernel
        finally:
            await kernel.stop()


VICTIM = "0x" + "b1" * 20
ATTACKER = "0x" + "e2" * 20


async def test_defence_another_users_failed_task_keeps_a_victims_entry_pinned(tmp_path: Path) -> None:
    """DEFENCE (was a known limit; fixed: a revert drops only the undone roots' direct pins, never
    content pins). KNOWN LIMIT (a user's data lost; an honest node unable to serve what its receipt names).
    The
    victim's receipted task remembers "the vault code is 4711" and writes ``notes.txt``. The attacker
    (another address: another namespace) runs the same writes, same bytes, and makes its task fail
    (failed tasks are not billed). A memory entry and a file are content-addressed without their
    namespace, so the attacker's writes are the victim's blocks; they are new to the attacker's
    namespace, so its revert (`NamespaceRoots._unpin_since`) removes *the* pin of each (pins are a
    set, on the embedded store as on Kubo). The victim's live roots and receipted trace still link
    them, but nothing pins them: the store lets them be removed (Kubo's GC would), after which the
    victim's memory and file are gone, the node's next task for the victim fails, and the node
    cannot serve the blocks its committed trace names (an availability claim it cannot answer).
    The attacker needs only to know (or guess: a common fact, an empty file) the bytes.

    Cause: node/supernet/node/kernel/namespaces.py `_unpin_since` (``pin_rm(content)``) with the
    "fresh" test of memory.py `add` / storage.py `put` judged per namespace, while pins are
    node-wide and not counted.

    Fix (by design): never unpin content on a revert (drop only the undone roots' direct pins; the
    failed task's content is bounded by the trace cap, `Dispatcher._write_fits`) and reclaim garbage
    by a reachability sweep from the live roots and the traces still in a dispute window; or keep a
    node-side reference count per content CID and unpin at zero."""
    store = EmbeddedStore(tmp_path / "store", fsync=False)
    fact = "the vault code is 4711"
    files = [["notes.txt", "meet at the old mill"]]
    async with kernel_on(store) as kernel:
        for n, agent, task_input in ((1, "jot", {"facts": [fact]}), (2, "drop", {"files": files})):
            assert (await kernel.run_task(spec(n, agent, task_input, user=VICTIM))).status == "ok"
        mem_ns, file_ns = namespace_of(VICTIM, "jot"), namespace_of(VICTIM, "drop")
        entry = str((await kernel.memory.roots.load(mem_ns) or {})["entries"][0])
        file_cid, _ = await kernel.storage.get(file_ns, "notes.txt")
        assert {entry, file_cid} <= set(await kernel.store.pin_ls("all"))
        for n, agent, task_input in ((3, "jot", {"facts": [fact]}), (4, "drop", {"files": files})):
            failed = await kernel.run_task(spec(n, agent, {**task_input, "fail": True}, user=ATTACKER))
            assert failed.status == "error"
        assert kernel.memory.roots.root(namespace_of(ATTACKER, "jot")) is None  # the attacker's writes undone
        pins = await kernel.store.pin_ls("all")
        assert entry in pins and file_cid in pins  # ... and the victim's blocks still pinned
        with pytest.raises(PinError):
            store.remove(entry)  # what a garbage collection may not do to a pinned block
        assert (await kernel.storage.get(file_ns, "notes.txt"))[1] == b"meet at the old mill"


async def test_defence_a_failed_rewrite_in_the_same_namespace_keeps_the_first_pin(tmp_path: Path) -> None:
    """DEFENCE. Within one namespace, bytes an earlier (receipted) task wrote and a later task writes
    again before failing are not "fresh" (memory.py `add`, storage.py `put` look at the current
    root), so the revert drops only the failed task's root and leaves the first write's pin."""
    store = EmbeddedStore(tmp_path / "store", fsync=False)
    files = [["a.txt", "same bytes"]]
    async with kernel_on(store) as kernel:
        assert (await kernel.run_task(spec(1, "jot", {"facts": ["kept"]}, user=VICTIM))).status == "ok"
        assert (await kernel.run_task(spec(2, "drop", {"files": files}, user=VICTIM))).status == "ok"
        mem_ns, file_ns = namespace_of(VICTIM, "jot"), namespace_of(VICTIM, "drop")
        roots = (kernel.memory.roots.root(mem_ns), kernel.storage.roots.root(file_ns))
        entry = str((await kernel.memory.roots.load(mem_ns) or {})["entries"][0])
        file_cid, _ = await kernel.storage.get(file_ns, "a.txt")
        again = [["b.txt", "same bytes"]]
        assert (
            await kernel.run_task(spec(3, "jot", {"facts": ["kept"], "fail": True}, user=VICTIM))
        ).status == "error"
        assert (
            await kernel.run_task(spec(4, "drop", {"files": again, "fail": True}, user=VICTIM))
        ).status == "error"
        assert (kernel.memory.roots.root(mem_ns), kernel.storage.roots.root(file_ns)) == roots
        pins = await kernel.store.pin_ls("all")
        assert pins.get(entry) == "recursive" and pins.get(file_cid) == "recursive"
        assert all(pins.get(r) == "direct" for r in roots)
