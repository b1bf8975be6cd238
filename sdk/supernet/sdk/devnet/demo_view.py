"""What the demo shows: chain events as they happen, and the closing summary.

The view reads only the chain (events and views of the deployed contracts), so what it prints
is what anyone could check, not what the demo's processes say about themselves.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from supernet.sdk.chain import Contracts

ETHER = 10**18

_WATCHED = (
    ("task_manager", "BatchCommitted"),
    ("task_manager", "ChallengeOpened"),
    ("task_manager", "VoteCommitted"),
    ("task_manager", "Voted"),
    ("task_manager", "ChallengeResolved"),
    ("task_manager", "DecoyRevealed"),
    ("task_manager", "RefundClaimed"),
    ("service_manager", "Slashed"),
    ("payments", "Redeemed"),
)


def eth(wei: int) -> str:
    """An amount for people: ETH with 4 decimals, or gwei when smaller than 0.001 ETH (task fees)."""
    if 0 < abs(wei) < ETHER // 1000:
        return f"{wei / 10**9:,.0f} gwei"
    return f"{wei / ETHER:.4f} ETH"


@dataclass
class ChainWatcher:
    """Polls the protocol's events and prints one line per event, with names instead of addresses."""

    contracts: Contracts
    names: dict[str, str]
    console: Console
    from_block: int
    started: float = field(default_factory=time.monotonic)
    counts: Counter[str] = field(default_factory=Counter)
    fraud_nodes: Counter[str] = field(default_factory=Counter)
    open_challenges: set[int] = field(default_factory=set)
    last_event_at: float = field(default_factory=time.monotonic)

    def name(self, address: str) -> str:
        """A role name for an address (or the address itself)."""
        return self.names.get(address.lower(), address[:10])

    def poll(self) -> None:
        """Print every watched event since the last poll."""
        head = self.contracts.w3.eth.block_number
        if head < self.from_block:
            return
        events: list[Any] = []
        for binding, event in _WATCHED:
            contract = getattr(self.contracts, binding).contract
            events += contract.events[event].get_logs(from_block=self.from_block, to_block=head)
        for ev in sorted(events, key=lambda e: (e["blockNumber"], e["logIndex"])):
            self._show(ev["event"], ev["args"])
        self.from_block = head + 1

    def _show(self, event: str, a: Any) -> None:
        self.counts[event] += 1
        self.last_event_at = time.monotonic()
        t = f"[dim]{time.monotonic() - self.started:6.1f}s[/dim]"
        if event == "BatchCommitted":
            line = f"batch #{a.batchId} committed by {self.name(a.node)}: {a['count']} receipts"
            self.console.print(f"{t} [cyan]chain[/cyan]  {line}")
        elif event == "ChallengeOpened":
            self.open_challenges.add(a.challengeId)
            self.console.print(
                f"{t} [yellow]challenge[/yellow] #{a.challengeId} by {self.name(a.challenger)} against "
                f"{self.name(a.node)} (batch #{a.batchId}, evidence {a.evidenceCid[:18]}…)"
            )
        elif event == "VoteCommitted":  # sealed: the side shows at the reveal (``Voted``)
            self.console.print(
                f"{t} [yellow]vote[/yellow]   #{a.challengeId}: {self.name(a.validator)} seals its vote "
                f"(weight {eth(a.weight)}, bonded)"
            )
        elif event == "Voted":
            verdict = "[red]fraud[/red]" if a.fraud else "[green]honest[/green]"
            self.console.print(
                f"{t} [yellow]vote[/yellow]   #{a.challengeId}: {self.name(a.validator)} says {verdict} "
                f"(weight {eth(a.weight)})"
            )
        elif event == "ChallengeResolved":
            self.open_challenges.discard(a.challengeId)
            if a.fraud:
                self.console.print(
                    f"{t} [red]resolved[/red] #{a.challengeId}: FRAUD; slashed {eth(a.slashed)}, refund "
                    f"held {eth(a.refund)}, challenger {eth(a.challengerReward)}, voters "
                    f"{eth(a.voterPool)}, burned {eth(a.burned)}"
                )
            else:
                self.console.print(f"{t} [green]resolved[/green] #{a.challengeId}: not fraud (bond to node)")
        elif event == "RefundClaimed":
            self.console.print(
                f"{t} [cyan]refund[/cyan]  #{a.challengeId}: {self.name(a.user)} showed its signed request, "
                f"{eth(a.amount)} credited"
            )
        elif event == "DecoyRevealed":
            self.open_challenges.discard(a.challengeId)
            self.console.print(
                f"{t} [green]decoy[/green]  #{a.challengeId}: {self.name(a.node)} shows it planted that "
                f"receipt; {self.name(a.challenger)} is paid a bounty of {eth(a.bounty)} for checking "
                f"(node rebate {eth(a.rebate)}), nobody slashed"
            )
        elif event == "Slashed":
            self.fraud_nodes[a.operator.lower()] += 1
            self.console.print(f"{t} [red]slashed[/red] {self.name(a.operator)}: {eth(a.amount)}")
        elif event == "Redeemed":
            self.console.print(
                f"{t} [cyan]paid[/cyan]   {self.name(a.node)} redeemed {eth(a.total)} "
                f"from {a.vouchers} voucher(s) in one call"
            )


def summary_tables(
    contracts: Contracts,
    names: dict[str, str],
    stakes_before: dict[str, int],
    served: Counter[str],
    faulty: set[str],
    users: list[str],
) -> tuple[Table, Table]:
    """The node table (stake before/after, slashes) and the user table (refunds credited)."""
    sm, tm = contracts.service_manager, contracts.task_manager
    nodes = Table(title="Nodes")
    for col in ("node", "plays", "tasks served", "stake before", "stake after", "slashes"):
        nodes.add_column(col, justify="right" if col not in ("node", "plays") else "left")
    for addr, before in stakes_before.items():
        view = sm.get_node(addr)
        plays = "[red]faulty[/red]" if addr.lower() in faulty else "[green]honest[/green]"
        nodes.add_row(
            names[addr.lower()],
            plays,
            str(served[addr.lower()]),
            eth(before),
            eth(view.stake + view.unbonding),
            str(view.slash_count),
        )
    refunds = refunds_by_user(contracts)
    people = Table(title="Users")
    for col in ("user", "refunds credited", "claimable now"):
        people.add_column(col)
    for u in users:
        people.add_row(names[u.lower()], eth(refunds.get(u.lower(), 0)), eth(tm.claimable(u)))
    return nodes, people


def refunds_by_user(contracts: Contracts) -> dict[str, int]:
    """User → refunds credited (``RefundClaimed``: the user is the signer of the request)."""
    tm = contracts.task_manager
    out: Counter[str] = Counter()
    logs = tm.contract.events.RefundClaimed.get_logs(from_block=contracts.deployment.deploy_block)
    for ev in logs:
        out[str(ev["args"]["user"]).lower()] += int(ev["args"]["amount"])
    return dict(out)


def unclaimed_refunds(contracts: Contracts) -> list[int]:
    """Fraud verdicts whose refund nobody has claimed yet (challenge ids)."""
    tm = contracts.task_manager
    logs = tm.contract.events.ChallengeResolved.get_logs(from_block=contracts.deployment.deploy_block)
    fraud = [int(ev["args"]["challengeId"]) for ev in logs if ev["args"]["fraud"] and ev["args"]["refund"]]
    return [cid for cid in fraud if tm.get_challenge(cid).refund_due > 0]
