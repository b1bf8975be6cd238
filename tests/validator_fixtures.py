"""Fixtures of the validator tests: a real network to catch cheating nodes in.

``vnet`` (module scope) is a real Anvil with the protocol deployed (devnet parameters), the real
default model loaded once, the embedded content store served over HTTP, a node registered with
stake, three validators and funded users, and the node's real kernel running a ``probe`` agent
(one deterministic tool call, one greedy and one sampled LLM call per task) with a
`FaultInjector` whose faults a test switches with `VNet.faults`.

`VNet.run_batch` runs tasks through that kernel, signs requests (users) and receipts (node),
puts the manifest on the store and commits the batch on chain the way the node service's
batcher does (`supernet.node.service.batcher`, same manifest format).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount
from supernet.node.agents.base import Agent
from supernet.node.agents.chat import ChatAgent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry, default_registry
from supernet.node.agents.retrieval import RetrievalAgent
from supernet.node.faults import FaultInjector, FaultKind
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.chain import Contracts, ProtocolParams, ReceiptTree
from supernet.sdk.chain.anvil import Anvil, dev_account, increase_time, mine
from supernet.sdk.chain.eip712 import TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import (
    Receipt,
    canonical_json,
    input_hash,
    output_hash,
    sign_receipt,
    trace_hash,
)
from supernet.sdk.formats.manifest import BatchManifest, ManifestEntry
from supernet.sdk.models import served_model_id
from supernet.sdk.store import StoreClient
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.sdk.store.embedded import serve_in_thread

ETHER = 10**18
VALIDATOR_STAKE = 2 * ETHER
NODE_STAKE = 3 * ETHER
TASK_FEE = 10**15


class ProbeAgent(Agent):
    """Test agent: a calculator call, then a greedy and a sampled LLM call."""

    agent_id = "probe"
    description = "Validator test agent: one tool call, one greedy and one sampled LLM call."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        value = await ctx.tools.call("calculator", {"expression": input["expr"]})
        n = int(input.get("max_new_tokens", 12))
        fmt = input.get("response_format")  # both LLM calls constrained when given
        greedy = await ctx.llm.chat(
            [{"role": "user", "content": f"{input['question']} ({value})"}],
            max_new_tokens=n,
            response_format=fmt,
        )
        sampled = await ctx.llm.chat(
            [{"role": "user", "content": input["question"]}],
            max_new_tokens=n,
            temperature=1.0,
            top_p=0.95,
            response_format=fmt,
        )
        return f"{value}|{greedy.text}|{sampled.text}"


def probe_registry() -> AgentRegistry:
    """The built-in agents and the probe agent (what the validators of these tests can replay)."""
    registry = default_registry()
    registry.register(ProbeAgent)
    return registry


@dataclass
class VNet:
    """The validator tests' network (see the module docstring)."""

    anvil: Anvil
    contracts: Contracts
    deployment: Path
    store_url: str
    store: StoreClient
    loaded: Any
    kernel: Any
    fault_specs: dict[FaultKind, float]
    injector: FaultInjector
    node: LocalAccount
    validators: tuple[LocalAccount, ...]
    users: tuple[LocalAccount, ...]
    tmp: Path
    nonce: int = 0
    batches: list[int] = field(default_factory=list)
    manifests: dict[int, str] = field(default_factory=dict)  # batch id -> manifest CID
    traces: dict[str, bytes] = field(default_factory=dict)  # trace CID -> block, stored or not
    withheld: dict[int, Any] = field(default_factory=dict)  # batch id -> manifest never stored

    def faults(self, **rates: float) -> None:
        """Switch the node's faults (``faults(tokens=1.0)``; no arguments: honest)."""
        self.fault_specs.clear()
        self.fault_specs.update({FaultKind(k): v for k, v in rates.items()})

    def key(self, account: LocalAccount) -> str:
        """0x hex private key."""
        return "0x" + bytes(account.key).hex()

    @asynccontextmanager
    async def other_kernel(self, engines: Any) -> AsyncIterator[Any]:
        """The node's kernel on other ``engines`` (one, or a list of LLM cores): the same store,
        agents and fault switch as the fixture's kernel, set up and stopped around the block."""
        from supernet.node.kernel.kernel import Kernel

        kernel = Kernel(engines, self.store, agents=self.kernel.agents, faults=self.injector)
        await kernel.setup()
        try:
            yield kernel
        finally:
            await kernel.stop()

    @asynccontextmanager
    async def format_kernel(self, compute: str) -> AsyncIterator[Any]:
        """The node's kernel on the model served in ``compute`` (same weights, another id)."""
        from supernet.node.llm import LLMEngine
        from supernet.sdk.models import served_model_id

        engine = LLMEngine.load("smollm2-135m", compute=compute, max_batch=4, max_seq_len=1024)
        assert engine.model_id == served_model_id(self.loaded.model_id, compute) != self.kernel.model_id
        async with self.other_kernel(engine) as kernel:
            yield kernel

    async def entry(self, batch_id: int, index: int) -> ManifestEntry:
        """Entry ``index`` of a committed batch's manifest, as validators read it."""
        return BatchManifest.from_dag(await self.store.get_dag(self.manifests[batch_id])).entries[index]

    async def run_batch(
        self,
        questions: list[str],
        max_new_tokens: int = 12,
        fault_plan: list[dict[str, float]] | None = None,
        edit_trace: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
        kernel: Any = None,
        models: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        chat_inputs: list[dict[str, Any]] | None = None,
        agent: type[Agent] = ChatAgent,
        commit: bool = True,
        withhold_manifest: bool = False,
    ) -> tuple[int, list[Receipt]]:
        """Run one task per question, commit them as one batch; returns (batch id, receipts).

        ``fault_plan[i]``: the node's faults for task ``i`` (``faults(**fault_plan[i])``; the node is
        honest afterwards); without it, the faults set by ``faults``. ``edit_trace(i, trace)``: a
        node that rewrites task ``i``'s trace before committing it (receipt and signatures follow
        the edited trace, so only the trace's content is wrong). ``kernel``: run the tasks on another
        kernel than the fixture's (e.g. one on a bf16 engine); it must use `VNet.injector`.
        ``models[i]``: the served model id task ``i`` is signed for and runs on (a kernel with several
        LLM cores); default: the kernel's first. ``response_format``: constrain both LLM calls of
        every task (structured output). ``chat_inputs``: run ``agent`` (the built-in ``chat`` agent
        unless given) on these inputs instead (one task each; ``questions`` is not read).
        ``commit=False``: a node that runs the tasks and never commits their receipts (batch id 0).
        ``withhold_manifest``: a node that commits the manifest's CID but never stores the manifest.
        """
        default_model = (kernel or self.kernel).model_id  # the served id: names the dtype
        agent = ProbeAgent if chat_inputs is None else agent
        agent_hash = bytes.fromhex((kernel or self.kernel).profile(agent.agent_id).hash()[2:])
        if chat_inputs is not None:
            questions = ["" for _ in chat_inputs]
        entries: list[ManifestEntry] = []
        receipts: list[Receipt] = []
        for i, q in enumerate(questions):
            model_id = bytes.fromhex((models[i] if models is not None else default_model)[2:])
            user = self.users[i % len(self.users)]
            self.nonce += 1
            task_input = (
                {
                    "question": q,
                    "expr": f"{i + 2} * 7 + {self.nonce}",
                    "max_new_tokens": max_new_tokens,
                    **({} if response_format is None else {"response_format": response_format}),
                }
                if chat_inputs is None
                else chat_inputs[i]
            )
            req = TaskRequest(
                user=user.address,
                node=self.node.address,
                model_id=model_id,
                agent_hash=agent_hash,
                input_hash=input_hash(task_input),
                max_fee=TASK_FEE,
                nonce=self.nonce,
                deadline=2**40,
            )
            rh = hash_task_request(req, self.contracts.domain)
            request = {
                "user": user.address,
                "node": self.node.address,
                "modelId": "0x" + model_id.hex(),
                "agentHash": "0x" + agent_hash.hex(),
                "inputHash": "0x" + req.input_hash.hex(),
                "maxFee": str(TASK_FEE),
                "nonce": str(self.nonce),
                "deadline": str(2**40),
            }
            request_signature = "0x" + sign_task_request(req, self.contracts.domain, user).hex()
            spec = TaskSpec(
                task_id="0x" + rh.hex(),
                agent_id=agent.agent_id,
                input=task_input,
                user=user.address,
                fee=TASK_FEE,
                agent_hash="0x" + agent_hash.hex(),
                request=request,
                request_signature=request_signature,
                model_id="0x" + model_id.hex(),
            )
            if fault_plan is not None:
                self.faults(**fault_plan[i])
            outcome = await (kernel or self.kernel).run_task(spec)
            assert outcome.status == "ok", outcome.error
            self.traces[outcome.trace_cid] = encode_dag(dict(outcome.trace))  # what the node holds
            output = self.injector.on_output(spec.task_id, outcome.output)  # where the node service calls it
            if fault_plan is not None:
                self.faults()
            trace_cid = outcome.trace_cid
            if edit_trace is not None:
                trace_cid = await self.store.put_dag(
                    edit_trace(i, await self.store.get_dag(trace_cid)), pin=True
                )
            receipt = Receipt(
                request_hash=rh,
                user=user.address,
                model_id=model_id,
                input_hash=req.input_hash,
                output_hash=output_hash(output),
                trace_hash=trace_hash(trace_cid),
                fee=TASK_FEE,
            )
            receipts.append(receipt)
            entries.append(
                ManifestEntry(
                    receipt=receipt,
                    leaf=receipt.leaf(),
                    signature=sign_receipt(receipt, self.node),
                    trace_cid=trace_cid,
                    agent=agent.agent_id,
                    request=TaskRequest.from_json(request),
                    request_signature=bytes.fromhex(request_signature[2:]),
                )
            )
        if not commit:
            return 0, receipts
        manifest = BatchManifest.seal(self.node.address, entries)
        tree = ReceiptTree(receipts)
        assert manifest.root == tree.root
        if withhold_manifest:
            cid = compute_cid(encode_dag(manifest.to_dag()), "dag-cbor")  # committed, never served
        else:
            cid = await self.store.put_dag(manifest.to_dag(), pin=True)
        tm = self.contracts.as_account(self.node).task_manager
        batch_id = (await asyncio.to_thread(tm.commit_batch, tree.root, len(receipts), cid)).value.batch_id
        mine(self.contracts.w3, 2)  # the seed block (devnet SEED_DELAY_BLOCKS = 1) and one after it
        self.batches.append(batch_id)
        self.manifests[batch_id] = cid
        if withhold_manifest:
            self.withheld[batch_id] = manifest.to_dag()
        return batch_id, receipts


@pytest.fixture(scope="session")
def smollm2_loaded() -> Any:
    """The real default model, loaded once per session (shared by node kernel and validators)."""
    from supernet.node.llm.loader import load_model

    return load_model("smollm2-135m", max_positions=1024)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def vnet(smollm2_loaded: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[VNet]:
    """A real chain, store, model and kernel (see the module docstring)."""
    from supernet.node.kernel.kernel import Kernel
    from supernet.node.llm import LLMEngine

    tmp = tmp_path_factory.mktemp("vnet")
    with _anvil() as anvil:
        contracts = Contracts.deploy(anvil.url, dev_account(0), ProtocolParams.devnet())
        dep = contracts.deployment.save(tmp / "deployment.json")
        node, validators, users = (
            dev_account(15),
            tuple(dev_account(i) for i in (16, 17, 18)),
            (dev_account(19),),
        )
        weights_id = bytes.fromhex(smollm2_loaded.model_id[2:])
        manifest = canonical_json(smollm2_loaded.manifest)
        assert contracts.model_registry.register_model(manifest, "smollm2-135m").value == weights_id
        model_id = bytes.fromhex(served_model_id(smollm2_loaded.model_id, "float32")[2:])
        contracts.as_account(node).service_manager.register_node(
            "http://127.0.0.1:1", [model_id], 10**9, NODE_STAKE
        )
        for v in validators:
            contracts.as_account(v).service_manager.register_validator(VALIDATOR_STAKE)
        increase_time(contracts.w3, 1)  # only stake older than a challenge votes on it
        for u in users:
            contracts.as_account(u).payments.deposit(node.address, ETHER)
        url, stop_store = serve_in_thread(tmp / "store")
        store = StoreClient(url)
        specs: dict[FaultKind, float] = {}
        injector = FaultInjector(specs, seed=7)
        engine = LLMEngine(
            smollm2_loaded.model,
            smollm2_loaded.tokenizer,
            smollm2_loaded.model_id,
            max_batch=4,
            max_seq_len=1024,
        )
        agents = AgentRegistry()
        agents.register(ProbeAgent)
        agents.register(ChatAgent)  # `run_batch(chat_inputs=...)`
        agents.register(RetrievalAgent)  # memory across tasks (`run_batch(agent=RetrievalAgent)`)
        kernel = Kernel(engine, store, agents=agents, faults=injector)
        await kernel.setup()
        try:
            yield VNet(
                anvil,
                contracts,
                dep,
                url,
                store,
                smollm2_loaded,
                kernel,
                specs,
                injector,
                node,
                validators,
                users,
                tmp,
            )
        finally:
            await kernel.stop()
            await store.aclose()
            stop_store()


@pytest.fixture(scope="module")
def fp32_validator_scorer(vnet: VNet) -> Any:
    """A float32 scorer of the vnet's weights: a validator configured in float32 (it judges nodes
    of other served formats by loading those on first use, `ModelScorer.for_compute`)."""
    from supernet.validator.scoring import ModelScorer

    return ModelScorer.from_loaded(vnet.loaded)


def _anvil() -> Anvil:
    return Anvil(accounts=20)


def validator_settings(net: VNet, index: int, db: Path, **extra: Any) -> Any:
    """Settings of validator ``index`` of ``net`` with its own database."""
    from supernet.validator.config import ValidatorSettings

    return ValidatorSettings(
        chain={"rpc_url": net.anvil.url, "deployment": net.deployment, "key": net.key(net.validators[index])},
        store_url=net.store_url,
        db_path=db,
        poll_interval_s=0.2,
        **extra,
    )


@pytest.fixture()
def validator_factory(vnet: VNet, tmp_path: Path) -> Iterator[Any]:
    """Build (not set up) `Validator`s on ``vnet`` sharing the session's model: ``make(index, db_name)``."""
    from supernet.validator.scoring import ModelScorer
    from supernet.validator.service import Validator

    scorer = ModelScorer.from_loaded(vnet.loaded)

    start = vnet.contracts.w3.eth.block_number + 1  # only batches of this test (the module's chain is shared)

    def make(
        index: int, db_name: str | None = None, events: list[Any] | None = None, **extra: Any
    ) -> Validator:
        db = tmp_path / (db_name or f"validator-{index}.sqlite")
        settings = validator_settings(vnet, index, db, **extra)
        settings.chain.start_block = start
        return Validator(
            settings,
            scorer=scorer,
            agents=probe_registry(),
            on_event=events.append if events is not None else None,
        )

    yield make
