"""Review 10: "a leaving node's promises fall due a challenge window before its stake may drop below
one slash" (``ServiceManager.stakeLeavesAt``, ``OmissionManager._checkPromise``) and its SDK mirror
(``supernet.sdk.chain.promises.stake_leaves_at``, ``claim_window``, ``promise_horizon``;
``Client.verify``). The contract attacks are in contracts/test/Review10.t.sol.

What was tried, and what was found:

- holds: the SDK mirror agrees with the deployed contracts on a real Anvil in every branch of
  ``stakeLeavesAt`` and ``_checkPromise`` (active; a partial unbond keeping one slash; a partial
  unbond below one slash; deregistered; inside the window; past ``stakeLeavesAt``; re-registered;
  a slash below one slash with an old unbonding): the due time the contract reports (PromiseNotDue,
  PromiseExpired) is ``claim_window`` of the SDK's ``stake_leaves_at`` every time
  (test_defence_the_sdk_mirror_is_the_contracts_due_time_in_every_branch_on_anvil).
- FIXED (was a known limit): the same run showed the chain refusing a claim (PromiseExpired) on a
  node that still held its whole unbonding stake and half a slash active, unfrozen: after a slash
  below one slash ``stakeLeavesAt`` is the old unbonding's ready time, already past, and the
  window's end had moved there with its start. Only the opening moves now
  (contracts/test/Review10.t.sol, test_defence_AStaleDustUnbondingNoLongerClosesTheClaimsAfterTheFirstSlash).
- FIXED (was a known limit): ``Client.verify`` had no notion of the window's end: past it, it said
  "claim the omission" and the claim was refused (PromiseExpired). It now takes ``(opens, closes)``
  (`supernet.sdk.chain.promises.claim_window`) and says the window has closed
  (test_defence_the_client_says_when_the_claim_window_has_closed).
- holds: for a node leaving by its own deregistration the client says pending until
  ``stakeLeavesAt - CHALLENGE_WINDOW``, then claim, and its claim is accepted; after the node
  re-registers (fresh stake behind the promise) the client goes back to pending
  (test_defence_the_client_follows_a_leaving_node_that_comes_back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import ETHER, MODEL_ID, Actors
from supernet.sdk.chain import Contracts, Receipt, TaskRequest, hash_task_request, input_hash, output_hash
from supernet.sdk.chain.anvil import advance_to, increase_time, revert, snapshot
from supernet.sdk.chain.contract_errors import PromiseExpired, PromiseNotDue
from supernet.sdk.chain.eip712 import ReceiptPromise, sign_receipt_promise
from supernet.sdk.chain.promises import claim_window, stake_leaves_at
from supernet.sdk.chain.registry import Operator, Role
from test_review_client_verify import CHALLENGE_WINDOW, _names, _promise
from test_review_client_verify2 import _at, _contract_accepts, _our_task

# --------------------------------------------------------------------------- the mirror on Anvil


class _Promised:
    """A task of ``user`` to ``node`` (request deadline ``deadline``) whose receipt the node
    promised to commit by ``commit_by``, never committed."""

    def __init__(self, c: Contracts, node: Any, user: Any, i: int, deadline: int, commit_by: int) -> None:
        self.user = user
        self.request = TaskRequest(
            user=user.address,
            node=node.address,
            model_id=MODEL_ID,
            agent_hash=bytes(32),
            input_hash=input_hash(f"leaving {i}"),
            max_fee=10**14,  # = the receipt's fee: a node charges the signed maxFee
            nonce=1000 + i,
            deadline=deadline,
        )
        self.receipt = Receipt(
            request_hash=hash_task_request(self.request, c.domain),
            user=user.address,
            model_id=MODEL_ID,
            input_hash=self.request.input_hash,
            output_hash=output_hash(f"answer {i}"),
            trace_hash=bytes([i]) * 32,
            fee=10**14,
        )
        self.promise = ReceiptPromise(self.receipt.request_hash, self.receipt.leaf(), commit_by)
        self.signature = sign_receipt_promise(self.promise, c.domain, node)

    def claim(self, c: Contracts) -> int:
        om = c.as_account(self.user).omission_manager
        return int(om.challenge_omission(self.promise, self.signature, self.request, self.receipt).value)

    def chain_says(self, c: Contracts) -> tuple[str, int]:
        """What the contract says of a claim now, in a snapshot: ("not due", when it opens) |
        ("expired", when it closed) | ("open", the promise's due time, the answer's bound)."""
        snap = snapshot(c.w3)
        try:
            oid = self.claim(c)
            return "open", c.omission_manager.get_omission(oid).commit_by
        except PromiseNotDue as exc:
            return "not due", int(next(iter(exc.values.values())))
        except PromiseExpired as exc:
            return "expired", int(next(iter(exc.values.values())))
        finally:
            revert(c.w3, snap)


@pytest.mark.anvil
def test_defence_the_sdk_mirror_is_the_contracts_due_time_in_every_branch_on_anvil(
    chain: Contracts, actors: Actors
) -> None:
    """Every branch of ``stakeLeavesAt`` and ``_checkPromise`` on the deployed contracts against the
    SDK's ``stake_leaves_at`` and ``claim_due``; the last state is the known limit of Review10.t.sol
    (an expired claim while the stake is all there)."""
    w3, node = chain.w3, actors.node
    read_sm, om = chain.service_manager, chain.omission_manager
    unbonding, slash = read_sm.unbonding_period(), om.slash_amount()
    window = chain.task_manager.challenge_window()
    sm = chain.as_account(node).service_manager
    sm.register_node("http://leaving.invalid", [MODEL_ID], 1, 3 * ETHER)
    now = int(w3.eth.get_block("latest")["timestamp"])
    users = actors.users
    far = _Promised(chain, node, users[0], 1, 2**40, now + 10 * unbonding)  # a far deadline
    near = _Promised(chain, node, users[1], 2, now + 60, now + 300)  # due by its own time
    bounded = _Promised(chain, node, users[2], 3, now + 60, now + 10 * unbonding)  # deadline bound
    seen: list[tuple[str, str, str]] = []

    floor = read_sm.min_node_stake()

    def check(state: str) -> None:
        op = read_sm.get_operator(node.address)
        leaves = read_sm.stake_leaves_at(node.address, slash)
        assert leaves == stake_leaves_at(op, slash, floor), state
        for name, p in (("far", far), ("near", near), ("bounded", bounded)):
            verdict, at = p.chain_says(chain)
            opens, closes = claim_window(p.promise.commit_by, p.request.deadline, unbonding, window, leaves)
            sdk = {"not due": opens, "expired": closes, "open": min(closes - window, 2**64 - 1)}[verdict]
            assert at == sdk, (state, name, verdict, at, sdk)
            seen.append((state, name, verdict))

    check("active")
    sm.request_unbond(ETHER)  # 2 ether active: keeps a slash
    check("unbonding, keeps a slash")
    assert read_sm.stake_leaves_at(node.address, slash) == 0
    sm.request_unbond(ETHER + ETHER // 2)  # 0.5 ether active: leaving
    check("unbonding below a slash")
    sm.deregister()
    leaves = read_sm.stake_leaves_at(node.address, slash)
    assert leaves == read_sm.get_operator(node.address).unbonding_ready_at > 0
    check("deregistered")
    advance_to(w3, leaves - window + 5)
    check("in the window")
    assert ("in the window", "far", "open") in seen
    advance_to(w3, leaves + 5)
    check("past stakeLeavesAt")
    assert ("past stakeLeavesAt", "far", "open") in seen  # open until its own due time + a window
    sm.register_node("http://back.invalid", [MODEL_ID], 1, 2 * ETHER + ETHER // 2)
    check("re-registered")
    assert read_sm.stake_leaves_at(node.address, slash) == 0

    # two lost receipts slash it below one slash; its 3 ether unbonding, ready long ago, stay
    now = int(w3.eth.get_block("latest")["timestamp"])
    lost = [_Promised(chain, node, users[i], 10 + i, now + 60, now + 1) for i in (0, 1)]
    increase_time(w3, 2)
    ids = [p.claim(chain) for p in lost]
    increase_time(w3, chain.task_manager.vote_window() + 1)
    for oid in ids:
        chain.as_account(actors.outsider).omission_manager.resolve_omission(oid)
    op = read_sm.get_operator(node.address)
    assert (op.stake, op.unbonding, op.frozen_count) == (ETHER // 2, 3 * ETHER, 0)
    check("slashed below a slash, old unbonding")
    assert ("slashed below a slash, old unbonding", "far", "open") in seen  # the stake is all there
    assert ("re-registered", "far", "not due") in seen and ("active", "near", "not due") in seen
    assert {v for _s, _n, v in seen} >= {"not due", "open", "expired"}


# --------------------------------------------------------------------------- the client's report


async def test_defence_the_client_says_when_the_claim_window_has_closed(tmp_path: Path) -> None:
    """It was (known limit): `Client.verify` checked only ``now >= due`` and said "claim the
    omission" past the window's end, where the chain refuses the claim (PromiseExpired). Now the
    report follows ``(opens, closes)`` (`claim_window`): a node slashed below one slash with an old
    unbonding (3 ether, ready at ``ready``) is leaving, its claim opens at ``ready - CHALLENGE_WINDOW``
    and stays open until a window after the promise's own due time, accepted by the contract
    throughout; past that the report says the window has closed, and the contract agrees."""
    node, _user, task_id, _trace_doc, doc, receipt, client, claims = _our_task(tmp_path)
    contracts: Any = client.contracts  # a stand-in (`_client`)
    ready, commit_by = 200_000, 300_000
    slashed = Operator(Role.NODE, True, 0, 1, ready, 0, 0, ETHER // 2, 3 * ETHER)
    contracts.service_manager.get_operator = lambda _a: slashed
    assert stake_leaves_at(slashed, ETHER, 2 * ETHER) == ready
    doc["promise"] = _promise(node, receipt, commit_by)
    now = ready + 10  # past stakeLeavesAt, before the promise's own due time
    _at(client, now)
    rep = await client.verify(task_id, wait_committed=0)
    kept = next(c for c in rep.checks if c.name == "commit promise kept")
    assert kept.ok is False and "claim the omission" in kept.detail and not rep.pending
    await client.claim_omission(task_id)
    assert _contract_accepts(claims[-1], now, leaves_at=ready) is None
    closed = commit_by + CHALLENGE_WINDOW
    _at(client, closed)
    rep = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    kept = next(c for c in rep.checks if c.name == "commit promise kept")
    assert kept.ok is False and "has closed" in kept.detail and "claim the omission" not in kept.detail
    assert _contract_accepts(claims[-1], closed, leaves_at=ready) == "PromiseExpired"
    assert _contract_accepts(claims[-1], closed - 1, leaves_at=ready) is None


async def test_defence_the_client_follows_a_leaving_node_that_comes_back(tmp_path: Path) -> None:
    """A node deregistered after giving a far promise: the client says pending until
    ``stakeLeavesAt - CHALLENGE_WINDOW``, then claim, and that claim is accepted. The node then
    re-registers with fresh stake (the contract no longer hurries it): the client, reading the
    record again, says pending, as the contract (PromiseNotDue) does."""
    node, _user, task_id, _trace_doc, doc, receipt, client, claims = _our_task(tmp_path)
    contracts: Any = client.contracts  # a stand-in (`_client`)
    ready = 200_000
    left = Operator(Role.NODE, False, 0, 0, ready, 0, 0, 0, 2 * ETHER)
    back = Operator(Role.NODE, True, 0, 0, ready, 0, 0, 2 * ETHER, 2 * ETHER)
    record = {"op": left}
    contracts.service_manager.get_operator = lambda _a: record["op"]
    doc["promise"] = _promise(node, receipt, 10**9)
    due = ready - CHALLENGE_WINDOW
    _at(client, due - 1)
    assert (await client.verify(task_id, wait_committed=0)).pending
    _at(client, due)
    rep = await client.verify(task_id, wait_committed=0)
    assert _names(rep)["commit promise kept"] is False
    await client.claim_omission(task_id)
    assert _contract_accepts(claims[-1], due, leaves_at=ready) is None
    record["op"] = back
    rep = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    assert rep.pending and _contract_accepts(claims[-1], due, leaves_at=0) == "PromiseNotDue"
