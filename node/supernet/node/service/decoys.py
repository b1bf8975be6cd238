"""Decoys: how a node pays the validators who check it (docs/security-parameters.md, "Paying
validators").

A share of every fee the node redeems goes to its verification escrow in Payments, which nothing
but decoy bounties can spend. A decoy is a task the node runs for an account of its own, through
its public API like any user's, with one LLM call's tokens corrupted (the ``tokens`` fault): only a
validator that re-scores the call finds it. When a validator challenges a decoy, the node shows
the account's ``Decoy(node, requestHash)`` signature (:meth:`DecoyPlanter.reveal_once`): nobody is
slashed, the validator gets its bond back plus the bounty, and the node gets the rebate share of
it, which is the only part of its escrow it can ever see again. So planting decoys that can be
found is the node's best use of money it has already given up, and checking is what pays a
validator in a network where nobody cheats.

What this module does, per ``[decoys]`` (docs/node.md):

* plants a decoy when decoys are below ``share`` of the node's tasks and the escrow covers one
  more bounty than the decoys still open to challenge;
* uses a fresh account for every decoy (derived from the node's key, so nothing extra needs
  keeping), funded by a plain transfer from the node; the account opens its own channel like a
  user and signs its request, its voucher and the Decoy message;
* records the decoy (with the signature) before the task is sent, and reloads the set on start,
  so a crash never leaves a decoy the node cannot reveal or runs it honestly;
* reveals every challenged decoy while its vote window is open.

What decoys do not hide (docs/security-parameters.md): the funding transfer links a decoy account
to the node on chain, and an input drawn from the node's recent tasks repeats one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from supernet.node.faults import FaultInjector
from supernet.node.service.chain import Web3Chain
from supernet.node.service.db import Database
from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.tasks import ChallengeStatus
from supernet.sdk.client import Client

log = logging.getLogger(__name__)

DECOY_GAS_WEI_FACTOR = 400_000
"""Gas (in units) a decoy account's own transactions need: its channel deposit, with margin."""

FALLBACK_INPUTS = (
    "Summarise the main idea of the water cycle in two sentences.",
    "Give three tips for writing clear commit messages.",
    "What is the difference between a list and a tuple in Python?",
    "Explain what a hash function is to a new programmer.",
    "Suggest a name for a small bakery and say why.",
    "List two advantages of unit tests.",
)
"""Inputs used when the node has no recent tasks to draw from and no ``inputs_file``."""


CONSTRAINED_KEYS = frozenset({"response_format", "tools"})
"""Keys of a chat input that constrain its reply to a grammar (`supernet.node.agents.chat`)."""


def _unconstrained(task_input: object) -> bool:
    """Whether a decoy may replay ``task_input``: a reply constrained to a grammar would break it
    wherever the decoy's edit lands, which the validator's model-free grammar check shows (review
    of this session's changes, 23), so such inputs are left out."""
    if isinstance(task_input, dict):
        return not CONSTRAINED_KEYS & task_input.keys()
    return isinstance(task_input, str)


def decoy_faults(node_key: bytes) -> FaultInjector:
    """The fault injector of a node that plants decoys and injects no fault of its own: which
    tokens of a decoy's call it changes is drawn from a seed only the node's key derives. With a
    public seed, anyone could replay the draw from a receipt's task id and tell the node's decoys
    from real tasks without re-scoring a call (tests/unit/test_review_decoy_tells.py)."""
    seed = hashlib.sha256(b"supernet decoy faults" + node_key).digest()
    return FaultInjector(seed=int.from_bytes(seed, "big"))


def decoy_account(node_key: bytes, index: int) -> LocalAccount:
    """The ``index``-th decoy account of the node with private key ``node_key``: only that key
    can derive it, so the node keeps no extra secret and an observer cannot list them."""
    seed = hashlib.sha256(b"supernet decoy account" + node_key + index.to_bytes(8, "big")).digest()
    return Account.from_key(seed)


class DecoyPlanter:
    """Plants and reveals this node's decoys (``run_forever / stop``, plus the ``*_once`` steps).

    Args:
        db: the node's database (tasks, receipts, the ``decoys`` table).
        chain: the node's chain port.
        faults: the kernel's fault hooks; a decoy's task id goes into ``faults.decoys``.
        account: the node's account (its key derives the decoy accounts).
        node_url: the node's own API, where decoys are submitted like any task.
        state_dir: where the decoy accounts' client state lives.
        share: most decoys as a fraction of all tasks.
        escrow_wei: fund the escrow up to this on start (0: only fees fill it).
        inputs: decoy inputs to draw from (empty: the node's recent inputs, then built-ins).
        interval_s: seconds between steps.
    """

    def __init__(
        self,
        db: Database,
        chain: Web3Chain,
        faults: FaultInjector,
        account: LocalAccount,
        node_url: str,
        state_dir: Path,
        *,
        share: float,
        escrow_wei: int = 0,
        inputs: Sequence[str] = (),
        interval_s: float = 5.0,
    ) -> None:
        self.db = db
        self.chain = chain
        self.faults = faults
        self.account = account
        self.node_url = node_url
        self.state_dir = state_dir
        self.share = share
        self.escrow_wei = escrow_wei
        self.inputs = list(inputs)
        self.interval_s = interval_s
        self._rng = random.Random()
        self._next_block = chain.contracts.deployment.deploy_block
        self._stop = asyncio.Event()
        tm, pay = chain.contracts.task_manager, chain.contracts.payments
        self._bounty = pay.decoy_bounty()
        self._window_s = int(tm.call("CHALLENGE_WINDOW"))
        # Decoys planted before a restart keep their fault (a resumed decoy must not run honestly).
        faults.decoys.update(str(r["task_id"]) for r in db.decoys())

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return."""
        self._stop.set()

    async def setup(self) -> None:
        """Fund the escrow up to ``escrow_wei`` (once; fees keep filling it)."""
        _, escrow = await self.chain.account_balances()
        if self.escrow_wei > escrow:
            await self.chain.fund_escrow(self.escrow_wei - escrow)
            log.info("verification escrow funded to %d wei", self.escrow_wei)

    async def run_forever(self) -> None:
        """Reveal and plant every ``interval_s`` until stopped; errors are logged and retried."""
        while not self._stop.is_set():
            for step in (self.reveal_once, self.plant_once):
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("decoys: %s failed, retrying: %s", step.__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    # -- planting ---------------------------------------------------------------------------------

    async def due(self) -> bool:
        """Whether a decoy should be planted now: decoys stay below ``share`` of all tasks, and
        the escrow covers a bounty for every decoy still open to challenge plus this one."""
        planted = self.db.decoys()
        if len(planted) + 1 > self.share * (self.db.task_count() + 1):
            return False
        horizon = time.time() - self._window_s
        open_ = sum(1 for r in planted if r["revealed_challenge"] is None and r["planted_at"] >= horizon)
        _, escrow = await self.chain.account_balances()
        return escrow >= self._bounty * (open_ + 1)

    async def plant_once(self) -> str | None:
        """Plant one decoy if :meth:`due`; returns its task id."""
        if not await self.due():
            return None
        index = len(self.db.decoys())
        decoy = decoy_account(bytes(self.account.key), index)
        client = Client(
            self.chain.contracts.as_account(decoy), state_dir=self.state_dir / decoy.address.lower()
        )
        try:
            await self._fund(client, decoy)
            p = await client.prepare(self._pick_input(), agent="chat", node_url=self.node_url)
            digest = await asyncio.to_thread(
                self.chain.contracts.payments.hash_decoy, self.account.address, bytes.fromhex(p.task_id[2:])
            )
            signature = decoy.unsafe_sign_hash(Hash32(digest)).signature
            # Recorded and marked before the node sees the task: a crash between the two steps
            # leaves a decoy that never ran (harmless), never a decoy the node cannot reveal.
            self.db.insert_decoy(p.task_id, index, "0x" + signature.hex(), time.time())
            self.faults.decoys.add(p.task_id)
            await client.send(p)
            final = await client.wait(p.task_id, self.node_url)
            client.finished(p, final.status, final.output)
        finally:
            await client.aclose()
        log.info("planted decoy %s (account %s)", p.task_id, decoy.address)
        return p.task_id

    async def _fund(self, client: Client, decoy: LocalAccount) -> None:
        """Give a new decoy account the ether for its deposit and that transaction's gas."""
        info = await client.node_info(self.node_url)
        fee = info.taskFee
        w3 = self.chain.contracts.w3
        gas = await asyncio.to_thread(lambda: int(w3.eth.gas_price)) * DECOY_GAS_WEI_FACTOR
        have = await asyncio.to_thread(w3.eth.get_balance, decoy.address)
        if have < fee + gas:
            await self.chain.send_ether(decoy.address, fee + gas - have)

    def _pick_input(self) -> str | dict[str, Any]:
        pool: Sequence[str | dict[str, Any]] = self.inputs or [
            i for i in self.db.recent_inputs(32) if _unconstrained(i)
        ]
        pool = pool or FALLBACK_INPUTS
        return self._rng.choice(list(pool))

    # -- revealing --------------------------------------------------------------------------------

    async def reveal_once(self) -> list[int]:
        """Read new challenges against this node; reveal the open ones on decoys. Returns the
        challenge ids revealed."""
        tm = self.chain.contracts.task_manager
        head = int(await asyncio.to_thread(lambda: tm.w3.eth.block_number))
        if head < self._next_block:
            return []

        def opened() -> list[Any]:  # ranged: a node down for longer than an RPC's cap catches up
            return list(tm.logs("ChallengeOpened", self._next_block, head))

        revealed = []
        me = self.account.address.lower()
        for ev in await asyncio.to_thread(opened):
            args = ev["args"]
            if str(args["node"]).lower() != me:
                continue
            task_id = "0x" + bytes(args["requestHash"]).hex()
            record = self.db.decoy(task_id)
            row = self.db.receipt(task_id)
            task = self.db.task(task_id)
            if record is None or record["revealed_challenge"] is not None or row is None or task is None:
                continue
            challenge_id = int(args["challengeId"])
            challenge = await asyncio.to_thread(tm.get_challenge, challenge_id)
            if challenge.status != ChallengeStatus.OPEN:
                continue  # already closed (a restart re-reads old events)
            receipt = Receipt.from_json(row.receipt_json)
            signature = bytes.fromhex(str(record["signature"])[2:])
            try:
                request = task.task_request(self.account.address)
                await self.chain.reveal_decoy(challenge_id, receipt, request, signature)
            except ContractError as exc:  # e.g. the vote window just closed: nothing more to do
                log.error("could not reveal decoy %s in challenge %d: %s", task_id, challenge_id, exc)
                continue
            self.db.mark_decoy_revealed(task_id, challenge_id)
            revealed.append(challenge_id)
            log.info("revealed decoy %s in challenge %d: the validator is paid", task_id, challenge_id)
        self._next_block = head + 1
        return revealed
