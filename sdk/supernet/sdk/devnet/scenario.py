"""The on-chain scenario of the devnet, told step by step: stake, pay, commit, redeem, dispute, slash.

Everything is real transactions on the devnet's Anvil; only the "re-execution" that convinces
the validators is simulated here (the validator package does the real one): receipt 2's claimed
output differs from what a re-run produces.

>>> net = Devnet.start(DevnetConfig(port=0), populated=False)   # doctest: +SKIP
>>> summary = run_scenario(net, Console())                     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from typing import Any

from rich.console import Console
from rich.table import Table
from supernet.sdk.chain import (
    ContractError,
    Receipt,
    ReceiptTree,
    TaskRequest,
    Voucher,
    hash_task_request,
    input_hash,
    output_hash,
    sign_receipt,
    sign_task_request,
    sign_voucher,
    vote_commitment,
)
from supernet.sdk.chain.anvil import advance_to, increase_time, mine
from supernet.sdk.chain.payments import pack_vouchers
from supernet.sdk.devnet.network import Devnet, populate

TASKS_PER_USER = 4
FEE = 10**15  # wei per task
CHEATED = 2  # index of the receipt whose output the node made up
ETH_UNBOND = 10**18  # what the node tries to take out during the dispute


def _eth(wei: int) -> str:
    return f"{wei / 10**18:,.4f} ETH"


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if key.endswith(("_wei", "_before", "_after")):
        return _eth(value)
    return f"{value:,}"


def run_scenario(net: Devnet, console: Console) -> dict[str, Any]:
    """Run the scenario on a devnet started with ``populated=False``; returns the final figures."""
    c, cfg = net.contracts, net.config
    node, validators, users = net.by_role("node")[0], net.by_role("validator"), net.by_role("user")
    step = iter(range(1, 100))

    def say(title: str) -> None:
        console.rule(f"[bold]{next(step)}. {title}")

    say("Register and stake")
    populate(c, cfg, net.actors)
    console.print(f"model 0x{cfg.model_id.hex()[:16]}… registered ({cfg.model_name})")
    for a in net.by_role("node") + validators:
        console.print(
            f"{a.role:9} {a.address} staked {_eth(c.service_manager.get_operator(a.address).stake)}"
        )
    stake_before = c.service_manager.get_operator(node.address).stake

    say("Users fund payment channels (one per node: a deposit pays only the node it names)")
    for u in users:
        balance = c.payments.channel(u.address, node.address).balance
        console.print(f"user      {u.address} channel to node {_eth(balance)}")

    say(f"Tasks off chain: {TASKS_PER_USER} per user to node {node.address[:10]}…")
    receipts: list[Receipt] = []
    requests: list[TaskRequest] = []  # each user keeps its own: it proves a refund is theirs
    for i in range(TASKS_PER_USER * len(users)):
        u = users[i % len(users)]
        req = TaskRequest(
            u.address, node.address, cfg.model_id, bytes(32), input_hash(f"q{i}"), FEE, i, 2**40
        )
        sign_task_request(req, c.domain, u.account)  # sent to the node's API with the input
        requests.append(req)
        r = Receipt(hash_task_request(req, c.domain), u.address, cfg.model_id, req.input_hash,
                    output_hash(f"answer {i}"), hashlib.sha256(b"trace %d" % i).digest(), FEE)  # fmt: skip
        sign_receipt(r, node.account)
        receipts.append(r)
    owed = {u.address: FEE * TASKS_PER_USER for u in users}
    vouchers = [Voucher(u.address, node.address, owed[u.address]) for u in users]
    sigs = [sign_voucher(v, c.domain, u.account) for v, u in zip(vouchers, users, strict=True)]
    console.print(
        f"{len(receipts)} signed requests, receipts signed by the node, {len(vouchers)} cumulative vouchers"
    )

    say("Batch commit, settling the vouchers in the same transaction")
    tree = ReceiptTree.from_receipts(receipts)
    node_c = c.as_account(node.account)
    commit = node_c.task_manager.commit_batch(
        tree.root, len(tree), "bafydevnetmanifest", pack_vouchers(vouchers, sigs)
    )
    batch = commit.value
    batch_id = batch.batch_id
    redeemed = sum(c.payments.redeemed(u.address, node.address) for u in users)  # paid in the commit
    console.print(
        f"batch {batch_id} in slot {batch.slot}: root 0x{tree.root.hex()[:16]}…, {len(tree)} receipts; "
        f"node paid {_eth(redeemed)} from {len(vouchers)} vouchers; gas {commit.gas_used:,} "
        f"({commit.gas_used / len(tree):,.0f} per task)"
    )

    say("Sampling seed")
    mine(c.w3, cfg.params.seed_delay_blocks + 1)
    # a validator proves the seed block's RANDAO mix to the SeedBeacon (no builder sets it)
    c.as_account(validators[0].account).task_manager.seal_seed_block(batch)
    seed_block = c.task_manager.seed_block(batch)
    console.print(
        f"seed 0x{c.task_manager.batch_seed(batch_id).hex()[:16]}… (the RANDAO mix of block {seed_block})"
    )
    for v in validators:
        n = sum(c.task_manager.is_sampled(batch_id, v.address, i) for i in range(len(receipts)))
        console.print(f"validator {v.address[:10]}… checks {n} of {len(receipts)} receipts")

    say("Voucher replay")
    try:
        node_c.payments.redeem(vouchers[:1], sigs[:1])
    except ContractError as exc:
        console.print(f"replaying a voucher is rejected: [yellow]{exc}[/yellow]")

    say(f"Challenge: receipt {CHEATED}'s output does not match the re-execution")
    bad = receipts[CHEATED]
    increase_time(c.w3, 1)  # only stake older than a challenge votes on it (the validators just joined)
    challenger = c.as_account(validators[0].account)
    ch = challenger.task_manager.challenge(
        batch_id, CHEATED, bad, tree.proof_at(CHEATED), "bafydevnetevidence"
    )
    console.print(
        f"challenge {ch.value} by {validators[0].address[:10]}… "
        f"with a {len(tree.proof_at(CHEATED))}-hash Merkle proof, "
        f"bond {_eth(c.params.challenge_bond)}; node frozen: "
        f"{c.service_manager.get_operator(node.address).frozen_count} open dispute(s)"
    )

    say("Validators vote: sealed first, then revealed")
    salts = {
        v.address: hashlib.sha256(f"devnet vote {ch.value} {v.address}".encode()).digest() for v in validators
    }
    for v in validators[1:]:
        commitment = vote_commitment(ch.value, v.address, True, salts[v.address])
        c.as_account(v.account).task_manager.commit_vote(ch.value, commitment)
        console.print(f"validator {v.address[:10]}… seals its vote (bond {_eth(c.params.challenge_bond)})")
    advance_to(c.w3, c.task_manager.reveals_at(ch.value))  # the vote's last REVEAL_WINDOW seconds
    for v in validators[1:]:
        c.as_account(v.account).task_manager.reveal_vote(ch.value, True, salts[v.address])
        console.print(f"validator {v.address[:10]}… reveals: fraud")

    say("Node tries to leave during the dispute")
    node_c.service_manager.request_unbond(ETH_UNBOND)
    increase_time(c.w3, cfg.params.unbonding_period + 1)
    try:
        node_c.service_manager.withdraw_unbonded()
    except ContractError as exc:
        console.print(f"withdrawal blocked: [yellow]{exc}[/yellow]")

    say("Resolve and slash")
    increase_time(c.w3, cfg.params.vote_window + 1)
    res = c.as_account(users[0].account).task_manager.resolve(ch.value).value
    for k in ("fraud", "slashed", "refund", "challengerReward", "voterPool", "burned"):
        shown = "refund held" if k == "refund" else k  # the signed maxFee of it is refunded, the rest burns
        console.print(f"{shown:17} {res[k] if k == 'fraud' else _eth(res[k])}")

    say("Payouts (pull payments)")
    bad_user = next(u for u in users if u.address == requests[CHEATED].user)
    user_tm = c.as_account(bad_user.account).task_manager
    refund = user_tm.claim_refund(ch.value, bad, requests[CHEATED]).value  # its signed request proves it
    user_tm.withdraw()
    console.print(f"user {bad_user.address[:10]}… showed its request and withdrew its refund {_eth(refund)}")
    for v in validators[1:]:
        got = c.as_account(v.account).task_manager.claim_vote_reward(ch.value).value
        console.print(f"validator {v.address[:10]}… claimed its vote bond back and a reward: {_eth(got)}")
    own = challenger.task_manager.claim_vote_reward(ch.value).value  # the challenge was its fraud vote
    challenger.task_manager.withdraw()
    paid = c.params.challenge_bond + res["challengerReward"] + own
    console.print(f"challenger withdrew bond + challenger reward + its vote reward: {_eth(paid)}")

    op = c.service_manager.get_operator(node.address)
    summary = {
        "batch_id": batch_id,
        "receipts": len(receipts),
        "redeemed_wei": redeemed,
        "challenge_id": ch.value,
        "fraud": bool(res["fraud"]),
        "slashed_wei": res["slashed"],
        "refund_wei": refund,
        "node_stake_before": stake_before,
        "node_stake_after": op.stake + op.unbonding,
        "node_slash_count": op.slash_count,
        "burned_wei": c.task_manager.total_burned(),
        "commit_and_settle_gas": commit.gas_used,
    }
    table = Table(title="Scenario summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, _fmt(k, v))
    console.print(table)
    return summary
