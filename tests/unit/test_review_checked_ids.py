"""Review: checked ids, the validators' on-chain word on which models *and agent code* they check.

Scope (commit c4d331a): what a validator declares (`Validator._declare_models`, `checked_ids`,
``MAX_MODELS``), how a client reads it (`coverage`, `Coverage.checkable` / ``known``,
`SigningRule.check(node, model_id, AgentProfile.code_hashes())`, shared by `Client` and the
OpenAI drop-in), and whether a receipt the rule lets a client sign can be replayed by the
validators that covered it (`check_replay`, `_TapeAgents._child`); the re-hash of packaged agents
(`AgentRegistry.check_unchanged`); the chat code hash that changed with the release. The chain is a
real Anvil with the compiled contracts (``network``); declarations are made by the validator
service's real `_declare_models` from real registries; profiles are the real kernel's
(`Kernel.profile`, on an engine that is never started); traces are judged by the real
`check_replay`. Not repeated here: tests/unit/test_review_agent_provenance.py.

Found:

1. HIGH, FIXED (`test_defence_a_child_listed_under_another_agents_covered_hash_is_a_finding`): a
   node lists a callable agent under a real id and the code hash of *another* installed agent
   (``review-summarizer`` at chat's hash). Both hashes are covered, so the client signs; the replay
   looks the child up by (hash, id), finds chat at that hash but not that id, and calls the whole
   receipt unverifiable, so the fabricated answer (and every LLM call before it) is never scored.
   The same mismatch on the task's own agent is a TRACE finding. FIXED: a child at a hash installed
   here under other ids only is a REPLAY finding (`_TapeAgents._child`); only a hash installed
   nowhere here is unverifiable.
2. MEDIUM, FIXED (`test_defence_a_model_and_an_agent_covered_by_different_validators_are_refused`):
   coverage is read per id, never jointly. A model covered by the validators of one model and an
   agent code hash covered by the validators of another (a package only they installed, or chat of
   another release during a rolling upgrade) are each "checkable", yet no validator holds both:
   every one of them finds the receipt unverifiable. FIXED: one quorum must hold the model and
   every code hash together (`coverage_of`, `SigningRule.uncovered`).
3. MEDIUM, FIXED (`test_defence_one_package_the_validators_lack_refuses_only_the_agents_that_call_it`):
   every profile lists every agent of the node as callable (`Kernel.callable_agents`), so an honest
   node serving one packaged agent the validators' quorum has not declared (a new package, or one
   cut by ``MAX_MODELS``) is refused for *every* agent, chat included, by `Client` and the drop-in.
   FIXED: a profile lists only the agents its agent may reach (`Agent.calls_agents`, closed over).
4. MEDIUM, FIXED (`test_defence_validators_of_the_last_release_leave_agent_code_unknown`):
   validators of the previous release declared their served model ids only; that makes coverage
   "known", so a client of this release finds every agent code hash uncovered and refuses every
   node (docs say "while nothing is known every code hash is accepted"). FIXED: agent code is
   known only once validators holding more than half of the stake declared `CHECKED_AGENTS`.
5. LOW, FIXED (`test_defence_an_agent_lookup_re_reads_a_package_only_when_it_changed`): every
   lookup (``GET /v1/node`` included) re-hashed a package's files; now a stat signature decides.

Checked and holding / residuals:

- `test_known_limit_half_the_stake_declaring_nothing_makes_clients_sign_any_code`: the "unknown"
  fallback is held by stake: non-declaring stake of at least the declaring stake turns every check
  off; a minimum-stake validator does not.
- `test_known_limit_max_models_leaves_out_the_last_packages_by_id_on_every_validator`: the cut is
  deterministic (models, the marker, built-ins, then packages by id, whatever the load order), and
  leaves room for 9 packages network-wide.
- `test_defence_nothing_in_the_repository_hard_codes_a_chat_code_hash`: devnet, demo, docs,
  examples and fixtures compute the hash; none carries the old or new one.
- Read and holding: a profile listing one callable id twice is unreadable (`callable_agents`), a
  call of an agent the profile does not list diverges, a malformed code hash is refused by the rule,
  an empty callable list signs the agent's hash alone (`AgentProfile.code_hashes`).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import supernet.node.agents.registry as registry_module
from chain_fixtures import VALIDATOR_STAKE, Actors
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry, default_registry
from supernet.node.kernel.errors import AgentNotAllowedError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import dev_account
from supernet.sdk.chain.coverage import CHECKED_AGENTS
from supernet.sdk.client.signable import SigningRule
from supernet.sdk.client.types import ClientError
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, CallableAgent, Limits, Trace
from supernet.sdk.models import COMPUTE_PRECISIONS, compute_of, served_model_id
from supernet.validator.replay_check import check_replay
from supernet.validator.service import Validator
from trace_fixtures import LIMITS, child_events
from trace_fixtures import trace_of as trace_fixture

from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder

pytestmark = pytest.mark.timeout(120)

WEIGHTS_X = "0x" + "a1" * 32
WEIGHTS_Y = "0x" + "b2" * 32
MODEL_X = served_model_id(WEIGHTS_X, "float32")
NODE_URL = "http://review-node.invalid"
CHAT = default_registry().get("chat").code_hash
OLD_CHAT = "0x137c308791479b83b6694c7ce3d7a2cef0b6fba1768c49d77dd9eacde442ae99"
"""ChatAgent's code hash before c4d331a (its module alone, without tool_calls and grammar)."""


class Orchestrator(Agent):
    """A packaged agent that calls the agent its input names, as planners do."""

    agent_id = "review-orchestrator"

    calls_agents = "*"  # the agent its input names
    description = "Calls another agent."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return await ctx.agents.call(input["agent"], input["input"])


class Summarizer(Agent):
    """A packaged agent some validators install."""

    agent_id = "review-summarizer"
    description = "Summarizes."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return "summary: " + str(input)


MODULE_HASH = Orchestrator.code_hash()  # both classes: this module's source


def with_packages(*classes: type[Agent]) -> AgentRegistry:
    """A validator's or node's registry: the built-ins and ``classes`` as packaged agents."""
    registry = default_registry()
    for cls in classes:
        registry.register(cls, package=f"{cls.agent_id} = {__name__}:{cls.__name__}")
    return registry


def declare(network: Contracts, account: Any, weights_id: str, registry: AgentRegistry) -> list[bytes]:
    """The validator service's own declaration step (`Validator._declare_models`), for a
    validator with weights ``weights_id`` replaying the agents of ``registry``, on the real
    chain (no model or store is loaded: the step reads neither)."""
    v = Validator.__new__(Validator)
    v.contracts, v.address = network.as_account(account), account.address
    v.verifier = SimpleNamespace(agents=registry)
    v._declare_models(weights_id)
    return network.service_manager.checked_models(account.address)


def node_registers(network: Contracts, actors: Actors, model_id: str) -> str:
    """The node (the outsider account) registers serving ``model_id``; its address."""
    sm = network.as_account(actors.outsider).service_manager
    sm.register_node(NODE_URL, [bytes.fromhex(model_id[2:])], 1, 2 * 10**18)
    return actors.outsider.address


def node_profile(registry: AgentRegistry, agent_id: str) -> AgentProfile:
    """What the node lists (and a user signs) for ``agent_id``: the real kernel's profile."""
    kernel = Kernel(FakeEngine(), None, KernelConfig(), agents=registry, embedder=NoEmbedder())
    return kernel.profile(agent_id)


def limits() -> Limits:
    return Limits.from_dag(LIMITS, "limits")


def trace_of(
    agent: AgentRef, task_input: Any, output: str, events: list[dict[str, Any]], **more: Any
) -> Trace:
    return trace_fixture(agent, MODEL_X, task_input, output, events, **more)


def orchestrated(child_id: str, child_hash: str, output: str) -> tuple[AgentProfile, Trace]:
    """The orchestrator's signed profile listing one callable agent, and a trace of a task in
    which it called that agent with ``"hi"`` and answered ``output``."""
    listed = CallableAgent(child_id, child_hash, (), False, False)
    profile = AgentProfile.of(AgentRef(Orchestrator.agent_id, MODULE_HASH), limits(), [], [listed])
    trace = trace_of(
        AgentRef(Orchestrator.agent_id, MODULE_HASH),
        {"agent": child_id, "input": "hi"},
        output,
        child_events(child_id, child_hash, "hi", output),
        agents=[listed.to_dag()],
    )
    return profile, trace


def signs(rule: SigningRule, node: str, model_id: str, profile: AgentProfile) -> str | None:
    """``None`` if the client signs ``profile`` for ``node`` and ``model_id``, else why not."""
    try:
        rule.check(node, model_id, profile.code_hashes())
    except ClientError as exc:
        return str(exc)
    return None


# -- 1. a child listed under another agent's covered hash ---------------------------------------------


@pytest.mark.anvil
async def test_defence_a_child_listed_under_another_agents_covered_hash_is_a_finding(
    network: Contracts, actors: Actors
) -> None:
    """HIGH, fixed. Who gained: a node, paid for answers it makes up, never challenged. Repro: every
    validator installs the packages ``review-orchestrator`` and ``review-summarizer`` and declares
    their code hash beside its model and the built-ins (`_declare_models`). The node lists the
    orchestrator with one callable agent, ``review-summarizer`` at *chat's* code hash. The client
    checks hashes only (`SigningRule.uncovered`): both are covered, it signs. The trace
    says the orchestrator called ``review-summarizer`` (as its input asks) at that hash and returns
    a made-up answer. Every validator's replay reaches the call, `_TapeAgents._child` finds chat at
    that hash but no ``review-summarizer``, and raises ReplayUnavailable: the receipt is
    unverifiable (`check_replay`), `Verifier` returns before any LLM call of the task is scored.
    No honest node lists an id under another installed agent's hash (a hash covers a package's
    files and built-in hashes are keyed by module names, so only one bundle has it); the same
    mismatch on the task's agent is already a TRACE finding.

    Defence: in `_TapeAgents._child`, a code hash this validator has installed under other ids
    only is a divergence (as `check_replay` does for the task's agent), not unavailable; only a
    hash installed nowhere here stays unverifiable (control below)."""
    registry = with_packages(Orchestrator, Summarizer)
    for v in actors.validators:
        declared = declare(network, v, WEIGHTS_X, registry)
        assert bytes.fromhex(MODULE_HASH[2:]) in declared and bytes.fromhex(CHAT[2:]) in declared
    node = node_registers(network, actors, MODEL_X)
    rule = SigningRule(network)

    # control: the child listed at its own hash replays clean against the validators' packages
    profile, honest = orchestrated(Summarizer.agent_id, MODULE_HASH, "summary: hi")
    assert signs(rule, node, MODEL_X, profile) is None
    clean = await check_replay(honest, registry, tokenizer=None)
    assert clean.findings == () and clean.unverifiable is None
    # control: a made-up answer of the child at its own hash is a finding
    _, lie = orchestrated(Summarizer.agent_id, MODULE_HASH, "5, trust me")
    assert (await check_replay(lie, registry, tokenizer=None)).findings
    # control: the task's own agent named by an id its hash does not have is a TRACE finding
    top = trace_of(AgentRef(Summarizer.agent_id, CHAT), "hi", "5, trust me", [])
    assert "not the id of an agent" in (await check_replay(top, registry, tokenizer=None)).findings[0].message

    profile, forged = orchestrated(Summarizer.agent_id, CHAT, "5, trust me")
    assert profile.code_hashes() == (MODULE_HASH, CHAT)
    assert signs(rule, node, MODEL_X, profile) is None  # both hashes covered: the client signs
    judged = await check_replay(forged, registry, tokenizer=None)
    assert judged.findings, f"unverifiable, never scored: {judged.unverifiable}"  # was: unverifiable
    assert "not the id of an agent with its signed code hash" in judged.findings[0].message
    # control: a child at a hash installed nowhere here stays unverifiable, never a finding
    _, elsewhere = orchestrated(Summarizer.agent_id, "0x" + "c4" * 32, "5, trust me")
    other = await check_replay(elsewhere, registry, tokenizer=None)
    assert other.findings == () and "not installed here" in str(other.unverifiable)


# -- 2. coverage per id, not per receipt ---------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_a_model_and_an_agent_covered_by_different_validators_are_refused(
    network: Contracts, actors: Actors
) -> None:
    """MEDIUM, fixed. Who gained: a node selling made-up answers. Repro: six validators of equal
    stake (quorum 30 %). Three hold model X's weights and run the built-ins; three hold model Y's
    and also installed the package ``review-summarizer`` (or: run chat of another release, in a
    rolling upgrade where Y's validators upgraded first). Each validator declares with the real
    `_declare_models`. Model X is covered (2 of 6 without the largest), the summarizer's hash is
    covered (2 of 6), so the client signs a task of ``review-summarizer`` on model X. No validator
    can check it: X's validators have no agent at that hash (`check_replay`: unverifiable), Y's do
    not serve X (`compute_of` is None: `Verifier` returns "not served by this validator").

    Defence: a receipt needs one validator holding *all* of it. Coverage of a signing is the stake
    of the validators whose declaration holds the model id and every code hash of the profile
    together, without the largest of them (`coverage_of`, what `SigningRule.check` and the
    client's discovery read), not each id's coverage on its own."""
    y_validators = [dev_account(i) for i in (10, 11, 12)]
    for v in y_validators:
        network.as_account(v).service_manager.register_validator(VALIDATOR_STAKE)
    x_registry, y_registry = default_registry(), with_packages(Summarizer)
    for v in actors.validators:
        declare(network, v, WEIGHTS_X, x_registry)
    for v in y_validators:
        declare(network, v, WEIGHTS_Y, y_registry)
    node = node_registers(network, actors, MODEL_X)
    rule = SigningRule(network)
    model, code = rule.coverage(MODEL_X), rule.coverage(MODULE_HASH)
    assert model.known and model.checkable and code.checkable
    assert model.covered_stake == code.covered_stake == model.total_stake // 2  # disjoint halves

    profile = AgentProfile.of(AgentRef(Summarizer.agent_id, MODULE_HASH), limits(), [], [])
    trace = trace_of(AgentRef(Summarizer.agent_id, MODULE_HASH), "hi", "5, trust me", [])
    x_view = await check_replay(trace, x_registry, tokenizer=None)
    assert "no agent with code hash" in str(x_view.unverifiable)  # X's validators: no such agent
    assert compute_of(MODEL_X, WEIGHTS_Y) is None  # Y's validators: not their model
    assert signs(rule, node, MODEL_X, node_profile(x_registry, "chat")) is None  # control
    problem = signs(rule, node, MODEL_X, profile)
    assert problem is not None, "signed: no validator holds both"  # was: signed
    assert "no common quorum" in problem and MODULE_HASH[2:] in problem


# -- 3. every agent of the node in every profile ------------------------------------------------------


@pytest.mark.anvil
async def test_defence_one_package_the_validators_lack_refuses_only_the_agents_that_call_it(
    network: Contracts, actors: Actors
) -> None:
    """MEDIUM (liveness), fixed. Who lost: an honest node operator (every client leaves it out),
    and users of the drop-in (it signs ``chat`` only). Repro: the validators declare the built-ins
    (`_declare_models`); the node also serves one packaged agent they have not installed (a new
    package, or one the validators' ``MAX_MODELS`` cut left out). `Kernel.callable_agents` puts
    *every* allowed agent into *every* profile, so chat's signed profile lists the package's hash,
    `AgentProfile.code_hashes` includes it and `SigningRule.check` refuses the node's chat, which
    never calls an agent (`ChatAgent.run`).

    Defence: a profile lists as callable only the agents its agent may call (an agent class
    declares them, ``calls_agents = ("summarizer",)`` or ``"*"``, closed over what those call;
    none for the built-ins), so a package the validators lack refuses only the agents that can
    reach it."""
    for v in actors.validators:
        declare(network, v, WEIGHTS_X, default_registry())
    node = node_registers(network, actors, MODEL_X)
    rule = SigningRule(network)
    plain = node_profile(default_registry(), "chat")
    assert plain.code_hashes() == (CHAT,)  # was: all three built-ins (chat calls none)
    assert signs(rule, node, MODEL_X, plain) is None  # control: a node of built-ins only
    chat = node_profile(with_packages(Summarizer), "chat")
    assert MODULE_HASH not in chat.code_hashes()  # was: listed
    problem = signs(rule, node, MODEL_X, chat)
    assert problem is None, f"the node's chat is refused: {problem}"  # was: refused
    # an agent that may call the package (``calls_agents = "*"``) lists it and is refused
    orchestrator = node_profile(with_packages(Orchestrator, Summarizer), Orchestrator.agent_id)
    assert Summarizer.agent_id in [a.id for a in orchestrator.agents] and CHAT in orchestrator.code_hashes()
    assert "agent code" in str(signs(rule, node, MODEL_X, orchestrator))


# -- 4. the rolling upgrade ------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_validators_of_the_last_release_leave_agent_code_unknown(
    network: Contracts, actors: Actors
) -> None:
    """MEDIUM (liveness), fixed. Who lost: every node and user of a client of this release until
    validators holding the quorum (without the largest) have upgraded and restarted. Repro: the
    validators run the release before c4d331a, which declared its served model ids only (its
    `_declare_models`: ``[served_model_id(weights, c) for c in COMPUTE_PRECISIONS]``). Coverage is
    "known" (they hold all the stake), so a new client reads chat's code hash (any hash) as
    declared by nobody and refuses every node, although docs/protocol.md and `signable` say that
    while nothing is known every code hash is accepted.

    Defence: "known" per kind: a validator of this release adds the fixed marker `CHECKED_AGENTS`
    (sha256 of ``supernet/checked-agents/v1``) to its declaration, and code hashes are known only
    once validators holding more than half of the stake declared the marker (a client's models
    rule is unchanged)."""
    for v in actors.validators:  # what the previous release's validator service declared
        old = [bytes.fromhex(served_model_id(WEIGHTS_X, c)[2:]) for c in COMPUTE_PRECISIONS]
        network.as_account(v).service_manager.declare_checked_models(old)
    node = node_registers(network, actors, MODEL_X)
    rule = SigningRule(network)
    assert rule.coverage(MODEL_X).checkable and rule.coverage(CHAT).known
    problem = signs(rule, node, MODEL_X, node_profile(default_registry(), "chat"))
    assert problem is None, f"every node refused: {problem}"  # was: refused
    private = AgentProfile.of(AgentRef("chat", "0x" + "c4" * 32), limits(), [], [])
    assert signs(rule, node, MODEL_X, private) is None  # agent code unknown: any hash, as for models
    for v in actors.validators[:2]:  # two of three upgrade: more than half of the stake has the marker
        assert CHECKED_AGENTS in declare(network, v, WEIGHTS_X, default_registry())
    rule = SigningRule(network)
    assert signs(rule, node, MODEL_X, node_profile(default_registry(), "chat")) is None
    assert "agent code" in str(signs(rule, node, MODEL_X, private))  # known now: refused


# -- residuals --------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_known_limit_half_the_stake_declaring_nothing_makes_clients_sign_any_code(
    network: Contracts, actors: Actors
) -> None:
    """Residual (LOW). The three validators (6 ETH) declare; a code hash nobody installed is
    refused. Validators that stay silent (new ones here, 5 then 1 ETH; or old ones declaring
    ``[]``) flip ``known``: with less than the declaring stake (5 ETH) nothing changes; with as
    much (6 ETH) coverage is "unknown" and clients sign any model and any code. Acceptable for
    now: that is half of all validator stake, which also carries half of every vote and is
    visible on chain; the fallback exists for networks whose validators predate declarations.
    Fix: once a deployment requires declarations (a flag in the deployment file, or the marker of
    finding 4 read as "this network declares"), drop the fallback: silent stake then only
    shrinks coverage."""
    for v in actors.validators:
        declare(network, v, WEIGHTS_X, default_registry())
    node = node_registers(network, actors, MODEL_X)
    private = AgentProfile.of(AgentRef("chat", "0x" + "c4" * 32), limits(), [], [])
    assert "agent code" in str(signs(SigningRule(network), node, MODEL_X, private))
    silent = network.as_account(dev_account(10)).service_manager
    silent.register_validator(5 * 10**18)
    assert signs(SigningRule(network), node, MODEL_X, private) is not None  # still known
    second = network.as_account(dev_account(11)).service_manager
    second.register_validator(10**18)  # silent stake now 6 ETH: as much as the declaring
    rule = SigningRule(network)
    assert not rule.coverage(CHAT).known
    assert signs(rule, node, MODEL_X, private) is None  # any code signed


@pytest.mark.anvil
async def test_known_limit_max_models_leaves_out_the_last_packages_by_id_on_every_validator(
    network: Contracts, actors: Actors
) -> None:
    """Residual (LOW). ``MAX_MODELS`` (16) holds a validator's 4 served ids, the marker
    `CHECKED_AGENTS`, the 3 built-ins and 8 packaged agents: with 12 packages installed,
    `_declare_models` leaves out the 4 whose ids sort last, whatever order they were loaded in, so
    validators with the same packages declare the same list (deterministic) and a node serving a
    left-out package is refused for the agents that can reach it (finding 3). Acceptable while few
    packages exist; fix: declare a root of the checked ids (a Merkle root, the list off chain) or
    give agent hashes their own larger cap."""
    stdlib = ("json", "re", "os", "abc", "types", "typing", "hashlib", "inspect", "textwrap",
              "dataclasses", "functools", "collections")  # fmt: skip
    packages = [
        type(f"Pkg{i}", (Summarizer,), {"agent_id": f"review-pkg-{i:02}", "bundle_modules": (mod,)})
        for i, mod in enumerate(stdlib)
    ]
    hashes = [bytes.fromhex(p.code_hash()[2:]) for p in packages]
    assert len(set(hashes)) == 12
    first = declare(network, actors.validators[0], WEIGHTS_X, with_packages(*packages))
    second = declare(network, actors.validators[1], WEIGHTS_X, with_packages(*reversed(packages)))
    models = [bytes.fromhex(served_model_id(WEIGHTS_X, c)[2:]) for c in COMPUTE_PRECISIONS]
    builtins = [bytes.fromhex(i.code_hash[2:]) for i in default_registry().list()]
    room = 16 - len(models) - 1 - len(builtins)  # MAX_MODELS less the served ids, marker, built-ins
    assert first == second == [*models, CHECKED_AGENTS, *builtins, *hashes[:room]]
    assert not set(hashes[room:]) & set(first)


def test_defence_an_agent_lookup_re_reads_a_package_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOW, fixed. Repro: `AgentRegistry.get` re-hashed a packaged agent's every file
    (`check_unchanged`), and it ran for each agent card of every unauthenticated ``GET /v1/node``
    (`KernelExecutor.agent_cards` -> `Kernel.profile`), for each signed request's shape check
    (`agent_hash`), twice more per task (`KernelExecutor.run`, `Kernel.submit`) and per agent
    call, synchronously on the node's event loop: a package carrying 8 MiB of data was read and
    hashed whole each time (10-40 ms per lookup).

    Defence: `check_unchanged` keeps each package's stat signature (`stat_signature`: path, mode,
    inode, size, mtime and ctime of every entry) from the last check whose hash matched, and hashes
    the files again only when it changed (a package written within `RACY_NS` of a check is hashed
    again each time); `Kernel.profile` (agent cards, ``agentHash``) lists the registered hash
    without reading the files. A change is still seen at the next task start: a new size, and a
    same-size rewrite that puts the mtime back (ctime cannot be set back)."""
    site = tmp_path / "site"
    pkg = site / "rvchk_bigdata"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "agent.py").write_text(
        "from supernet.sdk.agents import Agent\n\n\nclass A(Agent):\n    agent_id = 'review-big'\n"
        "    description = 'Carries data.'\n    bundle_package = 'rvchk_bigdata'\n\n"
        "    async def run(self, ctx, input):\n        return 'ok'\n"
    )
    table = pkg / "table.bin"
    table.write_bytes(bytes(range(256)) * (8 * 4096))  # 8 MiB
    monkeypatch.syspath_prepend(str(site))
    module = importlib.import_module("rvchk_bigdata.agent")
    hashed: list[str] = []
    real = registry_module.code_hash_of

    def counted(cls: type[Agent]) -> str:
        hashed.append(cls.agent_id)
        return real(cls)

    monkeypatch.setattr(registry_module, "code_hash_of", counted)
    try:
        registry = AgentRegistry()
        registry.register(module.A, package="review-big = rvchk_bigdata.agent:A")
        time.sleep(2 * registry_module.RACY_NS / 1e9)  # past the racy window of the writes above
        hashed.clear()
        registry.get("review-big")  # the first check hashes the files and keeps their signature
        assert hashed == ["review-big"]
        for _ in range(3):
            registry.get("review-big")
        node_profile(registry, "review-big")  # an agent card: the registered hash
        assert hashed == ["review-big"]  # was: a whole re-hash per lookup
        before = table.stat()
        table.write_bytes(bytes(range(256))[::-1] * (8 * 4096))  # same size, in place
        os.utime(table, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back (rsync -a)
        with pytest.raises(AgentNotAllowedError, match="package changed"):
            registry.get("review-big")
        table.write_bytes(b"changed")
        with pytest.raises(AgentNotAllowedError, match="package changed"):
            registry.get("review-big")
    finally:
        for name in [m for m in sys.modules if m.startswith("rvchk_bigdata")]:
            del sys.modules[name]


def test_defence_nothing_in_the_repository_hard_codes_a_chat_code_hash() -> None:
    """Attack (liveness in the upgrade): the chat code hash changed with this release (its bundle
    now covers tool_calls and grammar); a devnet script, demo, config example, doc or fixture
    carrying the old (or new) value would break or go stale. Holding: every tracked text file is
    free of both; they are computed (`code_hash_of`) wherever needed."""
    root = Path(__file__).resolve().parents[2]
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    here = Path(__file__).resolve().relative_to(root).as_posix()
    needles = (OLD_CHAT[2:].encode(), CHAT[2:].encode())
    found = []
    for rel in listed.stdout.splitlines():
        path = root / rel
        if rel == here or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        data = path.read_bytes().lower()
        found += [rel for n in needles if n in data]
    assert found == []
    assert CHAT != OLD_CHAT  # the release did change it
