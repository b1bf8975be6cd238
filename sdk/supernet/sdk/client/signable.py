"""Whom and what a client may sign a paid task for: the one rule `Client` and the OpenAI drop-in
(`supernet.sdk.openai_compat.SupernetAuth`) follow, read from the chain, never from the node.

* the address a node's ``/v1/node`` names is an active (staked) node on chain: nothing else backs
  its receipts with stake to slash or refund from;
* the model id it would be signed for is one that node registered on chain;
* the validators' quorum checks that id (`supernet.sdk.chain.coverage`): a receipt under a model
  no validator holds is unverifiable whatever it says;
* the validators' quorum replays the agent's code hash and every callable agent's the signed
  profile lists (`AgentProfile.code_hashes`; validators declare them beside their models): a
  receipt whose agent no validator has installed is unverifiable too, so a node listing an agent
  under a code hash of its own would sell answers nobody checks;
* and one quorum does both: the validators whose declarations hold the model id and every one of
  those code hashes together (`supernet.sdk.chain.coverage.coverage_of`): a validator holding the
  model but not the agent (or the agent but not the model) cannot check the receipt either.

As for models, while nothing is known (validators holding more than half of the stake have not
declared) every code hash is accepted; so is any code hash while validators holding more than half
of the stake have not declared agent code at all (`CHECKED_AGENTS`: validators of an earlier
release, during a rolling upgrade).

>>> SigningRule(contracts).check(node_address, model_id, profile.code_hashes())  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from supernet.sdk.chain.coverage import CoverageReader
from supernet.sdk.chain.registry import NodeView
from supernet.sdk.client.types import ClientError

if TYPE_CHECKING:
    from supernet.sdk.chain.contracts import Contracts


_CODE_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


class Signable(Protocol):
    """What the drop-in asks before it signs (`SigningRule`)."""

    def check(self, node: str, model_id: str, agent_hashes: Sequence[str]) -> None:
        """Raise `ClientError` (with why) unless a task for ``model_id``, under an agent profile
        naming the code hashes ``agent_hashes`` (`AgentProfile.code_hashes`), may be signed to
        ``node``."""
        ...


class SigningRule:
    """`Signable` read from the deployment's contracts (blocking chain reads)."""

    def __init__(self, contracts: Contracts) -> None:
        self.contracts = contracts
        self.coverage = CoverageReader(contracts)

    def active(self, node: str) -> NodeView:
        """The node's on-chain view, if it is an active node; else `ClientError`."""
        view = self.contracts.service_manager.get_node(node)
        if not view.active:
            state = "registered without the minimum stake" if view.registered else "not registered"
            raise ClientError(
                f"{node} (named by the node's /v1/node) is not an active node on chain ({state}): "
                "nothing would back its receipts, so nothing is deposited or signed for it"
            )
        return view

    def check(self, node: str, model_id: str, agent_hashes: Sequence[str]) -> None:
        view = self.active(node)
        if bytes.fromhex(model_id.removeprefix("0x")) not in view.model_ids:
            raise ClientError(
                f"node {node}: its /v1/node names model {model_id}, which it did not register on chain"
            )
        if (problem := self.uncovered(model_id, agent_hashes)) is not None:
            raise ClientError(f"node {node}: {problem}")

    def uncovered(self, model_id: str, agent_hashes: Sequence[str]) -> str | None:
        """Why no validator quorum checks a receipt for ``model_id`` under a profile naming the
        code hashes ``agent_hashes`` (``None``: validators holding the quorum without the largest
        of them hold the model and every one of the hashes together, or nothing is known yet)."""
        for code_hash in agent_hashes:
            if not _CODE_HASH.match(code_hash):
                return f"the agent code hash {code_hash!r} is not 0x and 64 hex digits"
        covered = self.coverage.of(model_id, agent_hashes)
        return None if covered.checkable else covered.why_not()
