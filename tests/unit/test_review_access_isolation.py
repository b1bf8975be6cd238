"""Adversarial review: isolation and authority inside the node's kernel.

Scope: the access manager (`supernet.node.kernel.access`: capabilities, privilege groups and their
globs, `Confirmation`s of irreversible tools, the `OwnershipIndex` behind ``store_read``), the
namespaces of memory and files (``namespaces``, ``storage``, ``dispatch``), how the operator's
``[access]`` and ``[[mcp.servers]]`` config becomes that policy (`supernet.node.service.config`,
``kernel_executor``, `supernet.node.kernel.mcp_tools`), the SDK's read grants
(`supernet.sdk.client.read_grant`) and the confirmation route that takes a signature instead of a
grant. Four attackers: a user whose agent reaches for another user's data or a denied tool; a user
replaying someone's signature (other task, other arguments, other chain, canonical-JSON spellings);
an operator's config mistake that silently widens access; namespace and CID collisions (address
case, shared content, deletes, restarts). Real parts throughout: the node's kernel (dispatcher,
managers, built-in tools) on an embedded store, the real access manager, the real MCP client with
tests/mcp_test_server.py over stdio, the node service with its real routes (chain: the FAKE of
``node_fixtures``, engine: a stub no test asks to generate).

Found:

1. MEDIUM, FIXED (`test_defence_an_irreversible_name_the_server_does_not_list_is_refused`): an
   ``[[mcp.servers]] irreversible`` entry that names no tool of the server, spelled with the
   server's prefix (``"pay.echo"``, the name every task, trace and group uses) or in another case,
   is silently ignored: the tool registers as reversible and every call of it runs with no
   confirmation. The list is the only switch of the human-in-the-loop, and it fails open.
   Fixed: a name with a ``.`` is refused with the config (the bare name suggested), and one the
   server does not list fails `MCPTools.start` (``MCPConfigError``: server, name, its tools), so the
   node does not start; so for ``deterministic``.
2. LOW-MEDIUM, FIXED (`test_defence_a_group_naming_no_running_agent_is_refused`): a
   ``[[access.groups]]`` entry whose ``agents`` names no agent the node runs (``"React"``, which the
   ``[engine] agents`` allow list accepts for ``react``; ``"*"``, as the ``tools`` globs read; a
   typo) is silently ignored, and the agent the operator meant to confine keeps the defaults:
   every tool, a memory and files.
   Fixed: a group's agent ids match ignoring case (as the allow list), a glob is refused with the
   config, and the kernel refuses to start with a group naming an agent it does not run
   (`NodePolicy.check_group_agents`, listing the running ids).
3. LOW, FIXED (`test_defence_the_confirmation_route_tells_a_stranger_nothing`):
   ``POST /v1/tasks/{id}/confirmations`` needs no read grant (the signature is the
   authentication) but answers 404 or 403 depending on whether the task waits for the posted
   ``actionHash`` before it checks who signed: anyone who has seen the task id (it is in the URL of
   every read, in proxies' and servers' logs, the reason read grants are short-lived) can test
   guesses of a paused irreversible call's arguments (amount, recipient) with a junk signature.
   Fixed: the route (and `AccessManager.confirm`) checks the signer against the task's user first:
   a stranger gets 403 whatever the action; only the user learns (404) that nothing waits for it.

Checked and holding:

- the namespace is ``<lower-case signer>/<agent id>``: a checksum- and a lower-case-spelled task of
  one user share it, another user's task reads none of it, by path or by ``store_read``; agent ids
  cannot hold a ``/`` (no ``<user>/<agent>`` can be forged), MCP server names no ``.``;
- one CID written by two namespaces (the same bytes) stays readable by each after the other
  deletes it, never by a third; the grants survive a restart (snapshot through JSON, restored);
  another spelling of a granted CID is the same grant, the same digest under the other codec is not;
- privilege-group globs: ``"mcp_files.*"`` never matches ``mcp_files_evil.x`` or ``mcp_filesx.y``,
  matching is case-sensitive and a mistyped tool pattern fails closed; ``"*"`` means every tool;
- a Confirmation confirms one JSON value of the arguments: other key orders are the same call,
  Unicode normal forms, nesting, another server's tool of the same name, another occurrence or
  another chain's domain are not;
- a read grant of another chain's deployment opens nothing here, the user's address may be spelled
  in any case but only the signer's grant is accepted.

Known limits: ``1`` and ``1.0`` (and ``-0.0`` and ``0``) share an ``actionHash``
(`test_known_limit_an_integer_and_its_float_share_one_confirmation`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.packages import AllowedAgent
from supernet.node.agents.registry import default_registry
from supernet.node.kernel.access import (
    AccessManager,
    NodePolicy,
    OwnershipIndex,
    PrivilegeGroup,
    namespace_of,
)
from supernet.node.kernel.errors import ConfirmationRequiredError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.mcp_tools import MCPServerConfig, MCPTools
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.tools import ToolRegistry, ToolSpec
from supernet.node.service.config import NodeSettings
from supernet.node.service.kernel_executor import access_policy, mcp_config
from supernet.sdk.chain.eip712 import Confirmation, Domain, sign_confirmation
from supernet.sdk.chain.receipts import action_hash
from supernet.sdk.client.read_grant import ReadGrantError, sign_read_grant, verify_read_grant
from supernet.sdk.store.cids import compute_cid
from supernet.sdk.store.files import file_cid

from tests.unit.test_node_confirmations import make_node, pending_event, sign
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder, stand_in_kernel

pytestmark = pytest.mark.timeout(60)

SERVER = str(Path(__file__).resolve().parents[1] / "mcp_test_server.py")
OWNER = Account.from_key("0x" + "11" * 32)
OTHER = Account.from_key("0x" + "22" * 32)
DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
TASK_ID = "0x" + "ab" * 32
ALICE = Account.from_key("0x" + "a1" * 32).address  # checksum spelling
BOB = Account.from_key("0x" + "b0" * 32).address
CAROL = Account.from_key("0x" + "c0" * 32).address


class Locker(Agent):
    """Test agent: runs a list of file and ``store_read`` operations, reporting each outcome."""

    agent_id = "locker"
    description = "File and store_read operations."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        out: list[str] = []
        for op, arg, *data in input["ops"]:
            try:
                if op == "put":
                    out.append(await ctx.storage.put(arg, data[0]))
                elif op == "get":
                    out.append((await ctx.storage.get(arg)).decode())
                elif op == "delete":
                    await ctx.storage.delete(arg)
                    out.append("deleted")
                else:
                    out.append((await ctx.tools.call("store_read", {"cid": arg}))["text"])
            except Exception as exc:
                out.append(f"{type(exc).__name__}")
        return json.dumps(out)


async def ops(kernel: Kernel, n: int, user: str, *steps: list[Any]) -> list[str]:
    outcome = await kernel.run_task(TaskSpec(f"0x{n:064x}", "locker", {"ops": list(steps)}, user=user))
    assert outcome.status == "ok", outcome.error
    return list(json.loads(outcome.output))


# -- found 1 (fixed): an irreversible list that names no tool of the server fails open -----------------


@pytest.mark.parametrize("spelling", ["pay.echo", "Echo"], ids=["with-the-prefix", "another-case"])
async def test_defence_an_irreversible_name_the_server_does_not_list_is_refused(spelling: str) -> None:
    """MEDIUM. Who gains: whoever steers an agent (its author, a prompt injection into its model)
    towards an irreversible action: it runs with no confirmation of the user. Repro: an operator
    writes ``irreversible = ["pay.echo"]`` (the name the node lists, traces record and groups
    match) or ``["Echo"]`` for the server ``pay``'s tool ``echo``; the node starts, registers
    ``pay.echo`` as reversible, and `AccessManager.check_tool` lets every call of it through without
    a signature. Fix by design: an ``irreversible`` (and ``deterministic``) name must be one the
    server lists: refused at config (a name with a ``.`` never is one) or at start (the server's
    tools left out, loudly), or the prefixed spelling taken as the same tool."""
    server = {"name": "pay", "command": sys.executable, "args": [SERVER, "stdio"], "irreversible": [spelling]}
    try:
        cfg = mcp_config(NodeSettings.load(None, mcp={"servers": [server]}).mcp.servers[0])
        mcp = MCPTools([cfg])
        await mcp.start()
    except ValueError:
        return  # refused before any tool was offered: secure
    try:
        registry = ToolRegistry()
        mcp.register(registry)
        if "pay.echo" not in registry.names():
            return  # the server's tools left out: secure
        tool = registry.spec("pay.echo")
        access = AccessManager(NodePolicy(), DOMAIN)
        task = TaskSpec(TASK_ID, "payer", "", user=OWNER.address)
        caps = access.capabilities(task, frozenset(registry.names()))
        try:
            access.check_tool(task, caps, tool, {"text": "send everything"})
            ran_unconfirmed = True
        except ConfirmationRequiredError:
            ran_unconfirmed = False
        assert not ran_unconfirmed, f"{spelling!r} in irreversible, yet pay.echo runs with no confirmation"
    finally:
        await mcp.close()


# -- found 2 (fixed): a group naming no running agent fails open ---------------------------------------


@pytest.mark.parametrize("agent_spelling", ["React", "*", "raect"], ids=["case", "glob", "typo"])
def test_defence_a_group_naming_no_running_agent_is_refused(agent_spelling: str) -> None:
    """LOW-MEDIUM (an operator's mistake, but silent and failing open). Who gains: every user of the
    agent the operator meant to confine, and its author: all of the node's tools (irreversible and
    MCP ones included), a memory and files. Repro: ``[engine] agents = ["React"]`` runs ``react``
    (the allow list ignores case), ``[[access.groups]] agents = ["React"], tools = ["calculator"]``
    confines nothing; so with ``["*"]`` (read like the ``tools`` globs) and a typo. Fix by design:
    a group's agent ids must be ids the node runs (refused at config or kernel start; or matched as
    the allow list matches them), never silently dropped."""
    group = {"name": "locked", "agents": [agent_spelling], "tools": ["calculator"]}
    try:
        settings = NodeSettings.load(None, access={"groups": [group]}, engine={"agents": ["React"]})
        config = KernelConfig(node_policy=NodePolicy(**access_policy(settings.access)))
        agents = default_registry(allowed=settings.engine.agents)
        kernel = Kernel(FakeEngine(), None, config, agents=agents, embedder=NoEmbedder(), params_type=dict)
    except ValueError:
        return  # refused at config or start: secure
    assert kernel.agents.ids() == ["react"]  # the allow list took "React" for react
    caps = kernel.access.capabilities(TaskSpec(TASK_ID, "react", ""), frozenset(kernel.tools.names()))
    assert (caps.tools, caps.memory, caps.storage) == ({"calculator"}, False, False), (
        f"group agents={[agent_spelling]!r} left react with {sorted(caps.tools)}, memory {caps.memory}"
    )


# -- found 3 (fixed): the confirmation route is an oracle of the waiting action ------------------------


async def test_defence_the_confirmation_route_tells_a_stranger_nothing(tmp_path: Path) -> None:
    """LOW (privacy; needs the task id while a call waits). Who gains: anyone who saw the task id
    (a URL in a proxy's or the node's access log): with no grant and a signature of its own key,
    it learns which of its guesses is the arguments of the paused irreversible call (here the
    amount 5 of 1..8: 403 for it, 404 for the rest). Fix by design: check the signer against the
    task's user (the database's) first, and say whether a call waits only to that user."""
    node = await make_node(tmp_path, timeout_s=30.0)
    try:
        r = await node.http.post("/v1/tasks", json=node.body([5]))
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        event = await pending_event(node, task_id)
        stranger = Account.create()
        answers: dict[int, int] = {}
        async with httpx.AsyncClient(transport=node.http._transport, base_url="http://node") as anyone:
            for amount in range(1, 9):
                guess = "0x" + action_hash("pay", {"amount": amount}, 0).hex()
                r = await anyone.post(
                    f"/v1/tasks/{task_id}/confirmations", json=sign(stranger, node, task_id, guess)
                )
                answers[amount] = r.status_code
        assert node.payments == [] and node.executor.pending_confirmations(task_id) == [event]
        assert len(set(answers.values())) == 1, f"the answers tell the waiting amount: {answers}"
    finally:
        await node.http.aclose()
        await node.service.cleanup()
        await node.executor.close()
        await node.store.aclose()


# -- namespaces, shared CIDs, deletes, restarts ------------------------------------------------------


async def test_defence_namespaces_hold_across_address_case_shared_cids_deletes_and_restarts(
    tmp_path: Path,
) -> None:
    """Alice writes under her checksum address and reads under her lower-case one (one namespace);
    Bob writes the very same bytes (the same file CID, granted to both). Alice deletes her file:
    Bob still reads his, Alice still reads the version in her history by CID, Carol reads neither,
    by path or by CID. The grants go through a JSON snapshot into a new kernel: the same answers."""
    secret, shared = "Alice's own note", "the same bytes, written twice"
    shared_cid = file_cid(shared.encode())
    async with stand_in_kernel(tmp_path / "store", (Locker,)) as kernel:
        alice = await ops(kernel, 1, ALICE, ["put", "note", secret], ["put", "shared", shared])
        note_cid = alice[0]
        assert alice[1] == shared_cid
        assert await ops(kernel, 2, ALICE.lower(), ["get", "note"], ["read", note_cid]) == [secret, secret]
        assert await ops(kernel, 3, BOB, ["put", "shared", shared], ["get", "note"], ["read", note_cid]) == [
            shared_cid,
            "FileNotFoundError",
            "ToolUnavailableError",
        ]
        assert await ops(kernel, 4, ALICE, ["delete", "shared"], ["get", "shared"], ["read", shared_cid]) == [
            "deleted",
            "FileNotFoundError",
            shared,
        ]
        assert await ops(kernel, 5, BOB, ["get", "shared"], ["read", shared_cid]) == [shared, shared]
        carol = await ops(kernel, 6, CAROL, ["read", shared_cid], ["read", note_cid], ["get", "shared"])
        assert carol == ["ToolUnavailableError", "ToolUnavailableError", "FileNotFoundError"]
        # what a restart reads back: the roots, and the grants kept beside them (`Database.load_roots`)
        saved = json.loads(json.dumps({**kernel.namespace_roots(), "grants": kernel.access.owned.snapshot()}))
        assert namespace_of(ALICE, "locker") in saved["grants"] and ALICE not in json.dumps(saved)
    async with stand_in_kernel(tmp_path / "store", (Locker,)) as kernel:
        kernel.restore_namespace_roots(saved)
        assert await ops(kernel, 7, BOB, ["read", shared_cid], ["read", note_cid]) == [
            shared,
            "ToolUnavailableError",
        ]
        assert await ops(kernel, 8, ALICE.lower(), ["read", note_cid], ["get", "note"]) == [secret, secret]
        assert await ops(kernel, 9, CAROL, ["read", shared_cid]) == ["ToolUnavailableError"]


def test_defence_cid_spellings_agent_ids_and_server_names_cannot_collide() -> None:
    """A granted CID in another multibase is the same grant; the same digest under the other codec
    (a dag-cbor block named as raw bytes, or the reverse) is not. Agent ids cannot hold ``/`` (so
    ``<user>/<agent>`` is one pair) and MCP server names cannot hold ``.`` (so no server poses as
    another's ``<server>.<tool>``)."""
    from multiformats import CID

    index = OwnershipIndex()
    raw = compute_cid(b"Alice's chunk")
    index.grant(namespace_of(ALICE, "locker"), [raw])
    cid = CID.decode(raw)
    assert index.owns(namespace_of(ALICE.lower(), "locker"), cid.encode("base58btc"))
    as_dag_cbor = str(CID("base32", 1, "dag-cbor", cid.digest))
    assert not index.owns(namespace_of(ALICE, "locker"), as_dag_cbor)
    assert not index.owns(namespace_of(BOB, "locker"), raw)
    for bad in ("evil/locker", "../locker", "Locker", "x/"):
        with pytest.raises(ValueError):
            AllowedAgent(id=bad, code_hash="0x" + "00" * 32)
    for bad in ("mcp_files.evil", "Files", "files/x"):
        with pytest.raises(ValueError):
            MCPServerConfig(bad, command="x")


# -- privilege-group globs ---------------------------------------------------------------------------


def test_defence_group_globs_stop_at_the_servers_dot_and_fail_closed() -> None:
    """``"mcp_files.*"`` means the tools of the server ``mcp_files`` only; a pattern the operator
    mistyped (case, the bare server name) gives fewer tools, never more; ``"*"`` is every tool."""
    registered = frozenset(
        {"calculator", "mcp_files.read", "mcp_files_evil.x", "mcp_filesx.y", "mcp_files2.read", "text"}
    )

    def tools(*patterns: str) -> set[str]:
        policy = NodePolicy(groups=(PrivilegeGroup("g", frozenset({"react"}), patterns),))
        return set(AccessManager(policy).capabilities(TaskSpec(TASK_ID, "react", ""), registered).tools)

    assert tools("mcp_files.*") == {"mcp_files.read"}
    assert tools("MCP_FILES.*", "Calculator", "mcp_files") == set()
    assert tools("mcp_files.[!w]*", "calc?lator") == {"mcp_files.read", "calculator"}
    assert tools("*") == set(registered)
    # a group narrows the agents it names only
    policy = NodePolicy(groups=(PrivilegeGroup("g", frozenset({"react"}), ()),))
    assert AccessManager(policy).capabilities(TaskSpec(TASK_ID, "chat", ""), registered).tools == registered


# -- confirmations: what one signature covers ---------------------------------------------------------


PAY = ToolSpec("pay.send", "irreversible", {"type": "object"}, irreversible=True)


def _confirmed(
    args: dict[str, Any], tool: ToolSpec = PAY, occurrence: int = 0, domain: Domain = DOMAIN
) -> Any:
    """A task whose user signed the call ``tool(args)`` (its ``occurrence``-th) in ``domain``."""
    digest = action_hash(tool.name, args, occurrence)
    signature = sign_confirmation(Confirmation(bytes.fromhex(TASK_ID[2:]), digest), domain, OWNER)
    return TaskSpec(TASK_ID, "payer", "", user=OWNER.address, confirmations={"0x" + digest.hex(): signature})


def _runs(task: TaskSpec, args: dict[str, Any], tool: ToolSpec = PAY, occurrence: int = 0) -> bool:
    access = AccessManager(NodePolicy(), DOMAIN)
    caps = access.capabilities(task, frozenset({PAY.name, "other.send"}))
    try:
        access.check_tool(task, caps, tool, args, occurrence)
    except ConfirmationRequiredError:
        return False
    return True


def test_defence_a_confirmation_covers_one_json_value_of_one_call() -> None:
    """Key order is no part of the call; Unicode normal forms, nesting, the server, the occurrence
    and the chain are: the user's signature over one never runs another."""
    signed = {"to": "Zo\u00eb", "amount": 5, "memo": {"ref": "a"}}
    task = _confirmed(signed)
    assert _runs(task, signed)
    assert _runs(task, dict(reversed(list(signed.items()))))  # the same JSON object
    nfd = {**signed, "to": unicodedata.normalize("NFD", signed["to"])}
    assert nfd["to"] != signed["to"] and not _runs(task, nfd)
    assert not _runs(task, {"to": signed["to"], "amount": 5, "memo.ref": "a"})
    assert not _runs(task, {**signed, "memo": {"ref": "a", "extra": None}})
    assert not _runs(task, signed, ToolSpec("other.send", "", {"type": "object"}, irreversible=True))
    assert not _runs(task, signed, occurrence=1)
    elsewhere = Domain(chain_id=1, verifying_contract=DOMAIN.verifying_contract)
    assert not _runs(_confirmed(signed, domain=elsewhere), signed)


def test_known_limit_an_integer_and_its_float_share_one_confirmation() -> None:
    """RFC 8785 spells ``1.0`` as ``1`` and ``-0.0`` as ``0``, so the user's consent to
    ``{"amount": 1}`` runs a call with ``{"amount": 1.0}``. Acceptable: JSON (what an MCP server
    receives) has one number for both, and the trace records the call as made, so a replay holds
    the node to it. A tool that tells int from float would need the arguments normalised before the
    call as task inputs are (`supernet.sdk.chain.receipts.normal_input`)."""
    task = _confirmed({"amount": 1, "fee": 0})
    assert _runs(task, {"amount": 1.0, "fee": -0.0})
    assert not _runs(task, {"amount": 1.000001, "fee": 0})


# -- read grants ---------------------------------------------------------------------------------------


def test_defence_read_grants_are_bound_to_chain_and_signer_not_to_address_case() -> None:
    """A grant the user signed in another deployment's domain opens nothing here; the address in
    the header may be spelled in lower case, but it must be the signer's."""
    node = "0x" + "44" * 20
    own = sign_read_grant(OWNER, node, DOMAIN)
    user, expiry, signature = own.header().split(":")
    assert verify_read_grant(f"{user.lower()}:{expiry}:{signature}", node, DOMAIN) == OWNER.address
    for domain in (
        Domain(chain_id=1, verifying_contract=DOMAIN.verifying_contract),
        Domain(chain_id=DOMAIN.chain_id, verifying_contract="0x" + "55" * 20),
    ):
        with pytest.raises(ReadGrantError):
            verify_read_grant(own.header(), node, domain)
    with pytest.raises(ReadGrantError):
        verify_read_grant(f"{OTHER.address}:{expiry}:{signature}", node, DOMAIN)


async def test_defence_confirmations_wait_per_task_and_user() -> None:
    """A paused call's action, confirmed by the task's user, runs once; the same signature posted
    to another paused task of the same tool and arguments (another user's) is refused there."""
    from supernet.node.kernel.access import ConfirmationRejectedError

    access = AccessManager(NodePolicy(confirmation_timeout_s=5.0), DOMAIN)
    tasks = [
        TaskSpec(TASK_ID, "payer", "", user=OWNER.address),
        TaskSpec("0x" + "cd" * 32, "payer", "", user=OTHER.address),
    ]
    seen: list[Any] = []
    for t in tasks:
        access.watch(t, seen.append)
    caps = [access.capabilities(t, frozenset({PAY.name})) for t in tasks]
    calls = [
        asyncio.create_task(access.authorize_tool(t, c, PAY, {"amount": 5}))
        for t, c in zip(tasks, caps, strict=True)
    ]
    for _ in range(50):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert [p.task_id for p in seen] == [TASK_ID, "0x" + "cd" * 32]
    owner_sig = sign_confirmation(
        Confirmation(bytes.fromhex(TASK_ID[2:]), bytes.fromhex(seen[0].action_hash[2:])), DOMAIN, OWNER
    )
    with pytest.raises(ConfirmationRejectedError):
        access.confirm(seen[1].task_id, seen[1].action_hash, owner_sig)
    assert access.confirm(TASK_ID, seen[0].action_hash, owner_sig) is True
    await calls[0]
    assert not calls[1].done()
    access.forget(seen[1].task_id)
    with pytest.raises(asyncio.CancelledError):
        await calls[1]
