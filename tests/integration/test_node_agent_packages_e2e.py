"""Agents from packages through a real node, end to end: a real Anvil, ``supernet node run`` in a
subprocess (real kernel, SmolLM2, embedded store) whose ``[agents] allow`` names the example
package's ``calc-explain`` at its code hash, and the user's ``Client``.

Besides the example package (installed by ``make setup``), the node's environment has one more
installed distribution, written by the fixture (a ``.dist-info`` with ``supernet.agents`` entry
points on the node's ``PYTHONPATH``) with two agents: ``e2e-unlisted``, installed but not in
``[agents] allow``, and ``e2e-wrong-hash``, allowed at a code hash that is not its installed one.

``GET /v1/node`` lists the allowed agent with its description, input schema and code hash; the
user's signed task for it runs over HTTP through the SDK and returns its answer (its trace names the
agent and code hash, its receipt verifies); the two other agents are not listed, and a signed task
for either is refused with a 403 that names the agent, with nothing stored.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from node_fixtures import NodeProcess, node_on_anvil, signed_task
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.client import Client, ClientError
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef
from supernet.sdk.store import StoreClient
from supernet_example_agent.agent import CalcExplainAgent

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

NODE_KEY_INDEX = 15
USER_INDEXES = (16, 17)
EXAMPLE = "calc-explain"
UNLISTED, WRONG_HASH = "e2e-unlisted", "e2e-wrong-hash"
REVIEWED_EARLIER = "0x" + "5e" * 32  # what the operator allowed for e2e-wrong-hash: not its code

AGENT_MODULE = """
from supernet.sdk.agents import Agent


class Extra(Agent):
    agent_id = "{agent_id}"
    description = "An installed agent this node must not run."
    input_schema = {{"type": "string"}}

    async def run(self, ctx, input):
        return "{agent_id} ran: " + str(input)
"""


def install_extra_agents(site: Path) -> None:
    """A distribution with two ``supernet.agents`` entry points, one top-level package each,
    discoverable (``importlib.metadata``) by a process with ``site`` on its ``PYTHONPATH``."""
    points = []
    for agent_id in (UNLISTED, WRONG_HASH):
        package = "supernet_e2e_" + agent_id.replace("-", "_")
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text("")
        (site / package / "agent.py").write_text(textwrap.dedent(AGENT_MODULE.format(agent_id=agent_id)))
        points.append(f"{agent_id} = {package}.agent:Extra")
    dist = site / "supernet_e2e_agents-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: supernet-e2e-agents\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[supernet.agents]\n" + "\n".join(points) + "\n")


def installed_hashes(env: dict[str, str]) -> dict[str, str]:
    """What ``python -m supernet.node.agents.packages`` (the operator's listing) says is installed:
    agent id -> code hash."""
    done = subprocess.run(
        [sys.executable, "-m", "supernet.node.agents.packages"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    found = re.findall(r'\{ id = "([^"]+)", code_hash = "(0x[0-9a-f]{64})" \}', done.stdout)
    return dict(found)


@dataclass
class Net:
    anvil: Anvil
    contracts: Contracts
    deployment: Path
    node: NodeProcess
    tmp: Path
    hashes: dict[str, str]  # installed agent id -> code hash, as the node's environment sees them

    def client(self, user_index: int, name: str) -> Client:
        key = "0x" + bytes(dev_account(user_index).key).hex()
        return Client.connect(self.anvil.url, self.deployment, key, state_dir=self.tmp / f"user-{name}")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("agent-packages")
    site = tmp / "site"
    install_extra_agents(site)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", path)  # the node process inherits it: the extra agents are installed
        hashes = installed_hashes(dict(os.environ))
        assert {EXAMPLE, UNLISTED, WRONG_HASH} <= set(hashes), hashes
        assert hashes[WRONG_HASH] != REVIEWED_EARLIER
        allow = f"""
[engine]
max_new_tokens = 16

[agents]
allow = [
  {{ id = "{EXAMPLE}", code_hash = "{hashes[EXAMPLE]}" }},
  {{ id = "{WRONG_HASH}", code_hash = "{REVIEWED_EARLIER}" }},
]
"""
        with node_on_anvil(tmp, NODE_KEY_INDEX, extra=allow) as (anvil, contracts, dep, node):
            yield Net(anvil, contracts, dep, node, tmp, hashes)


def stored_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The node's task admissions: tasks, users' nonces, access audits."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        return {
            t: sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in ("tasks", "nonces", "audit")
        }


async def test_the_node_lists_the_allowed_package_agent_with_its_card(net: Net) -> None:
    assert net.hashes[EXAMPLE] == CalcExplainAgent.code_hash()  # the listing's hash is the package's
    async with httpx.AsyncClient(base_url=net.node.url, timeout=30) as http:
        info = (await http.get("/v1/node")).json()
    cards = {c["id"]: c for c in info["agentCards"]}
    assert info["agents"] == {"chat": cards["chat"]["agentHash"], EXAMPLE: cards[EXAMPLE]["agentHash"]}
    assert set(cards) == {"chat", EXAMPLE}  # neither the unlisted nor the wrong-hash agent
    card = cards[EXAMPLE]
    assert card["codeHash"] == net.hashes[EXAMPLE]
    # what a user signs: the profile of the package's code under this node's limits and tools
    profile = AgentProfile.from_json(card["profile"])
    assert profile.agent == AgentRef(EXAMPLE, net.hashes[EXAMPLE]) and profile.hash() == card["agentHash"]
    assert card["description"] == CalcExplainAgent.description
    assert card["inputSchema"] == dict(CalcExplainAgent.input_schema)
    assert card["package"] == f"{EXAMPLE} = supernet_example_agent.agent:CalcExplainAgent"
    assert cards["chat"]["package"] is None  # a built-in
    # the node saw the wrong-hash package and refused it before importing it, saying why
    log = net.node.log_tail(200_000)
    assert f"agent {WRONG_HASH!r}" in log and "hash_mismatch" in log, log[-3000:]
    assert net.hashes[WRONG_HASH] in log and REVIEWED_EARLIER in log


async def test_a_signed_task_for_the_package_agent_runs_over_http(net: Net) -> None:
    client = net.client(USER_INDEXES[0], "calc")
    try:
        task_input = {"expression": "(17 + 3) * 4", "max_new_tokens": 8}
        tokens: list[str] = []
        result = await client.submit_task(task_input, agent=EXAMPLE, deposit=10**17, on_token=tokens.append)
        assert result.status == "done" and result.trace_cid is not None
        assert result.output.startswith("(17 + 3) * 4 = 80. "), result.output
        assert len(result.output) > len("(17 + 3) * 4 = 80. ")  # and the model's sentence
        assert tokens, "the LLM call's tokens were streamed"
        async with StoreClient(net.node.url + "/v1/store") as store:  # the node's read-only store
            doc: dict[str, Any] = await store.get_dag(result.trace_cid)
        assert doc["agent"]["id"] == EXAMPLE and doc["agent"]["code_hash"] == net.hashes[EXAMPLE]
        assert [e["kind"] for e in doc["events"]] == ["tool", "llm"]
        assert doc["output"] == result.output
        report = await client.verify(result.task_id, wait_committed=60)
        assert report.ok, report.failed()
        # an input the published schema rejects is refused by the SDK before anything is signed
        with pytest.raises(ClientError, match="input schema"):
            await client.submit_task({"expr": "1 + 1"}, agent=EXAMPLE)
    finally:
        await client.aclose()


async def test_tasks_for_agents_not_run_here_are_refused_and_nothing_is_stored(net: Net) -> None:
    user = dev_account(USER_INDEXES[1])
    async with httpx.AsyncClient(base_url=net.node.url, timeout=30) as http:
        info = (await http.get("/v1/node")).json()
        domain = Domain(info["chainId"], info["verifyingContract"])
        fee = int(info["taskFee"])

        def body(agent: str, agent_hash: str, task_input: str = "2 + 2") -> dict[str, Any]:
            doc = signed_task(
                user,
                info["address"],
                domain,
                task_input,
                cumulative=fee,
                fee=fee,
                model_id=info["models"][0],
                agent_hash=agent_hash,
            )
            return {**doc, "agent": agent}

        # The SDK refuses before signing: the node's /v1/node does not list them.
        client = net.client(USER_INDEXES[1], "refused")
        try:
            for agent in (UNLISTED, WRONG_HASH):
                with pytest.raises(ClientError, match=f"does not run agent '{agent}'"):
                    await client.submit_task("2 + 2", agent=agent, node_url=net.node.url)
            assert not client.state.tasks
        finally:
            await client.aclose()

        before = stored_rows(net.node.db_path)
        grant = ReadGrantAuth(user, info["address"], domain)  # an account is readable by its user only
        last_nonce = (await http.get(f"/v1/accounts/{user.address}", auth=grant)).json()["lastNonce"]
        # A client that signs anyway (with the installed code hash, or the one the operator allowed):
        refused = [
            (UNLISTED, net.hashes[UNLISTED]),
            (WRONG_HASH, net.hashes[WRONG_HASH]),
            (WRONG_HASH, REVIEWED_EARLIER),
        ]
        for agent, agent_hash in refused:
            r = await http.post("/v1/tasks", json=body(agent, agent_hash))
            assert r.status_code == 403, (agent, r.text)
            error = r.json()["error"]
            assert error["code"] == "forbidden", error
            assert error["message"] == f"agent {agent!r} is not run by this node", error
        # The allowed agent, signed for another version of its code (the package changed since):
        r = await http.post("/v1/tasks", json=body(EXAMPLE, REVIEWED_EARLIER))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "bad_request"
        assert "agentHash does not match" in r.json()["error"]["message"]
        listed = (await http.get("/v1/node")).json()["agents"][EXAMPLE]
        assert listed in r.json()["error"]["message"]  # the hash it would need
        assert (await http.get(f"/v1/accounts/{user.address}", auth=grant)).json()["lastNonce"] == last_nonce
    assert stored_rows(net.node.db_path) == before
    assert not any(agent in repr(before["tasks"]) for agent in (UNLISTED, WRONG_HASH))
