"""A commit priced out by the base fee is replaced at its nonce, never left to wait it out.

The batcher stores a signed ``commitBatch`` before it broadcasts it, and re-broadcast the same bytes
until it landed: under a base-fee spike past its fee cap, for as long as the spike lasted. Its
receipts then waited uncommitted, their promises fell due (omission claims) and their chain reads
aged toward `MAX_PIN_AGE_S` (findings): an honest node slashed by the fee market. Now
`Web3Chain.repriced` signs the same call at the same nonce with higher fees, stored before it is
sent; one nonce, so one of the two lands (real Anvil, which refuses a transaction below the base
fee; the real node service with the FAKE executor of `test_review_crash_consistency`).
"""

from __future__ import annotations

import pytest
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from supernet.node.service.ports import SignedCommit
from supernet.sdk.chain.anvil import mine, set_next_base_fee
from supernet.sdk.chain.bindings import latest_base_fee

from tests.unit.test_review_crash_consistency import FEE, NodeRig, _commits_of, rig  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _fees(raw: bytes) -> tuple[int, int, int]:
    tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    return int(tx["nonce"]), int(tx["maxFeePerGas"]), int(tx["maxPriorityFeePerGas"])


async def test_a_commit_priced_out_by_the_base_fee_is_replaced_at_its_nonce_and_lands_once(
    rig: NodeRig,  # noqa: F811
) -> None:
    c, a = rig.network, rig.actors
    node = await rig.start()
    try:
        signed: list[SignedCommit] = []
        real_sign = node.chain.sign_commit

        async def sign_then_spike(*args: object, **kw: object) -> SignedCommit:
            commit = await real_sign(*args, **kw)  # type: ignore[arg-type]
            assert await node.chain.repriced(commit) is None, "not priced out: nothing to replace"
            _, cap, _ = _fees(commit.raw)
            set_next_base_fee(c.w3, 4 * cap)  # the spike comes between signing and sending
            mine(c.w3, 1)
            signed.append(commit)
            return commit

        node.chain.sign_commit = sign_then_spike  # type: ignore[method-assign]
        for i in range(2):  # max_size 2: the second task cuts the batch
            await rig.done_task(node, f"q{i}", FEE * (i + 1))
        with pytest.raises(Exception, match="base fee"):  # Anvil refuses it below the base fee
            await node.batcher.flush()
        [batch] = node.db.unfinished_batches()
        [first] = signed
        assert batch.status == "sent" and node.db.commit_tx(batch.id) == (
            first.tx_hash,
            first.raw,
            first.nonce,
        )

        for b in node.db.unfinished_batches():  # the batcher's next attempt
            await node.batcher.commit(b)
        root = bytes.fromhex(batch.root[2:])
        [chain_id] = _commits_of(c, a.node.address, root)
        done = node.db.batch(batch.id)
        assert done is not None and (done.status, done.chain_batch_id) == ("committed", chain_id)
        assert len(signed) == 1, "no new commit was signed: the stored one was replaced"
        landed = c.w3.eth.get_transaction(done.tx_hash)  # type: ignore[arg-type]
        nonce, cap, tip = _fees(first.raw)
        assert done.tx_hash != first.tx_hash and int(landed["nonce"]) == nonce
        assert int(landed["maxFeePerGas"]) >= max(cap * 9 // 8, latest_base_fee(c.w3))
        assert int(landed["maxPriorityFeePerGas"]) >= tip * 9 // 8
        call = TypedTransaction.from_bytes(HexBytes(first.raw)).as_dict()["data"]
        assert bytes(landed["input"]) == bytes(call), "the same call: the same batch and vouchers"
    finally:
        set_next_base_fee(c.w3, 10**9)
        mine(c.w3, 1)
        await rig.kill(node)
