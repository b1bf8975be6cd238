"""`supernet devnet demo`: a whole network on one machine, with one node that cheats.

Anvil and the contracts, the embedded content store, honest nodes, one faulty node
(``--fault KIND:RATE``) and validators, each a real ``supernet`` process; users pay for tasks
with the SDK's `Client`. The demo prints the chain's events as they happen and ends with a
summary. It succeeds only if the faulty node was slashed, no honest node was, and every user
whose task was proven faulty got a refund credited.

>>> ok = run_demo(DemoConfig(tasks=6), Console())   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from supernet.sdk.chain import Contracts
from supernet.sdk.client import Client
from supernet.sdk.devnet.demo_view import (
    ChainWatcher,
    eth,
    refunds_by_user,
    summary_tables,
    unclaimed_refunds,
)
from supernet.sdk.devnet.network import (
    ETHER,
    Actor,
    Devnet,
    DevnetConfig,
    pulled_model_manifest,
    register_models,
)
from supernet.sdk.devnet.processes import ServiceProcess, free_port
from supernet.sdk.errors import SupernetError
from supernet.sdk.store.embedded import serve_in_thread

MAX_EXTRA_TASKS = 12
"""Tasks sent to the faulty node after the plan while its fault has not fired (0.5^12: never)."""

PROMPTS = (
    "What is the capital of France?",
    "Name a primary colour.",
    "What is 2 plus 2?",
    "Say hello in Spanish.",
    "What do bees make?",
    "Name a planet in our solar system.",
    "What is the opposite of hot?",
    "What animal says meow?",
)


@dataclass(frozen=True)
class DemoConfig:
    """Shape and pace of the demo network."""

    tasks: int = 20
    honest_nodes: int = 2
    validators: int = 3
    users: int = 4
    fault: str = "answer:0.5"
    max_new_tokens: int = 16
    model: str = "smollm2-135m"
    timeout_s: float = 280.0
    settle_s: float = 15.0
    """After the last event, how long to wait for validators to finish before judging."""
    keep_dir: Path | None = None
    explorer_port: int | None = 8090
    """Port of `supernet explorer` (0, or 8090 taken: any free port); None: no explorer."""
    hold: Callable[[DemoNetwork], None] | None = None
    """Called once the demo is judged, before the network stops (tests browse the explorer)."""


@dataclass(frozen=True)
class DemoNetwork:
    """Where the running demo's pieces are (what `DemoConfig.hold` receives)."""

    rpc_url: str
    deployment: Path
    store_url: str
    explorer_url: str | None
    ok: bool


def run_demo(cfg: DemoConfig, console: Console) -> bool:
    """Run the whole demo; True when the network behaved (see the module docstring)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the story
    work = cfg.keep_dir or Path(tempfile.mkdtemp(prefix="supernet-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    procs: list[ServiceProcess] = []
    nodes_total = cfg.honest_nodes + 1
    net = Devnet.start(
        DevnetConfig(
            port=free_port(),
            nodes=nodes_total,
            validators=cfg.validators,
            users=cfg.users,
            model_manifest=_model_manifest(cfg.model),
            model_name=cfg.model,
            state_dir=work / "devnet",
            block_time=1.0,
        ),
        populated=False,
    )
    store_url, stop_store = serve_in_thread(work / "store")
    try:
        ok, explorer_url = _run(cfg, console, net, store_url, work, procs)
        if cfg.hold is not None:
            deployment = net.config.state_dir / "deployment.json"
            cfg.hold(DemoNetwork(net.anvil.url, deployment, store_url, explorer_url, ok))
        return ok
    finally:
        console.print("[dim]stopping nodes, validators, store and anvil…[/dim]")
        for p in procs:
            p.stop()
        stop_store()
        net.stop()
        if cfg.keep_dir is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            console.print(f"logs and state kept in {work}")


def _model_manifest(model: str) -> bytes:
    manifest = pulled_model_manifest(model)
    if manifest is None:
        raise SupernetError(f"model {model!r} is not pulled: run `supernet model pull {model}`")
    return manifest


def _start_explorer(
    cfg: DemoConfig,
    console: Console,
    rpc: str,
    deployment: Path,
    store_url: str,
    work: Path,
    procs: list[ServiceProcess],
) -> str | None:
    """`supernet explorer` on the devnet (when its distribution is installed); returns its URL."""
    if cfg.explorer_port is None or importlib.util.find_spec("supernet.explorer") is None:
        return None
    port = cfg.explorer_port or free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            port = free_port()  # 8090 taken (another explorer?): any free port
    args = ["explorer", "--rpc", rpc, "--deployment", str(deployment), "--store", store_url]
    args += ["--port", str(port), "--db", str(work / "explorer.sqlite"), "--poll", "0.5"]
    proc = ServiceProcess("explorer", args, work / "explorer.log")
    procs.append(proc)  # stopped with the other services
    proc.start()
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{url}/healthz", timeout=cfg.timeout_s)
    console.print(f"[bold]explorer[/bold] {url}  (indexing the devnet; up while the demo runs)")
    return url


def _run(
    cfg: DemoConfig, console: Console, net: Devnet, store_url: str, work: Path, procs: list[ServiceProcess]
) -> tuple[bool, str | None]:
    c = net.contracts
    actors = net.actors
    names = {a.address.lower(): f"{a.role}-{a.index}" for a in actors}
    nodes = [a for a in actors if a.role == "node"]
    faulty = nodes[-1]
    names[faulty.address.lower()] = f"node-{faulty.index} (faulty)"
    validators = [a for a in actors if a.role == "validator"]
    users = [a for a in actors if a.role == "user"]
    console.rule("[bold]Supernet demo")
    console.print(f"chain {net.anvil.url}   store {store_url}   work dir {work}")

    # Setup on chain: the model, the validators' stakes and the users' deposits.
    register_models(c, net.config.model_manifest, cfg.model)
    for v in validators:
        c.as_account(v.account).service_manager.register_validator(5 * ETHER)
    for u in users:  # a payment channel to every node: a deposit pays only the node it names
        for n in nodes:
            c.as_account(u.account).payments.deposit(n.address, ETHER // len(nodes))
    net.write_state()
    deployment = net.config.state_dir / "deployment.json"

    # The services, each a real process (one torch thread each: 2 cores are shared by all).
    common = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    urls: dict[str, str] = {}
    for n in nodes:
        port = free_port()
        urls[n.address.lower()] = f"http://127.0.0.1:{port}"
        conf = work / f"node-{n.index}.toml"
        conf.write_text(
            f'data_dir = "{work / f"node-{n.index}"}"\n[api]\nport = {port}\n'
            f'[chain]\nenabled = true\nrpc_url = "{net.anvil.url}"\ndeployment = "{deployment}"\n'
            f"auto_register = true\nstake_wei = {10 * ETHER}\n"
            f'[store]\nurl = "{store_url}"\n'
            f'[engine]\nmodel = "{cfg.model}"\nmax_new_tokens = {cfg.max_new_tokens}\n'
            "[batch]\nmax_size = 4\nmax_age_s = 2.0\n[redeem]\ninterval_s = 10.0\nmin_amount_wei = 1\n"
            # Decoys pay the validators who check (docs/security-parameters.md): a few in a short
            # demo, from an escrow funded at start for five devnet bounties.
            f"[decoys]\nshare = 0.2\nescrow_wei = {5 * c.payments.decoy_bounty()}\ninterval_s = 2.0\n"
        )
        args = ["node", "run", "--config", str(conf)]
        if n is faulty:
            args += ["--fault", cfg.fault]
        key = "0x" + bytes(n.account.key).hex()
        procs.append(
            ServiceProcess(
                names[n.address.lower()],
                args,
                work / f"node-{n.index}.log",
                {**common, "SUPERNET_IDENTITY__PRIVATE_KEY": key},
            )
        )
    for v in validators:
        args = ["validator", "run", "--rpc", net.anvil.url, "--deployment", str(deployment)]
        args += ["--store", store_url, "--db", str(work / f"validator-{v.index}.sqlite"), "--poll", "0.5"]
        args += ["--model", cfg.model, "--threads", "1"]
        key = "0x" + bytes(v.account.key).hex()
        env = {**common, "SUPERNET_VALIDATOR_CHAIN__KEY": key}
        procs.append(ServiceProcess(names[v.address.lower()], args, work / f"validator-{v.index}.log", env))

    started = time.monotonic()
    console.print(
        f"starting {len(nodes)} nodes (one runs --fault {cfg.fault}) and {len(validators)} validators…"
    )
    for p in procs:
        p.start()
    for p, n in zip(procs, nodes, strict=False):
        p.wait_http(urls[n.address.lower()] + "/healthz", timeout=cfg.timeout_s)
    for p in procs[len(nodes) :]:
        p.wait_log("ready", timeout=cfg.timeout_s)
    console.print(f"all services up in {time.monotonic() - started:.0f} s")
    explorer_url = _start_explorer(cfg, console, net.anvil.url, deployment, store_url, work, procs)
    stakes_before = {n.address: c.service_manager.get_node(n.address).stake for n in nodes}

    watcher = ChainWatcher(c, names, console, from_block=c.w3.eth.block_number)
    served = asyncio.run(_submit_all(cfg, console, net, users, nodes, urls, names, watcher, work, procs))

    # Let batches commit and validators check, challenge, vote and resolve.
    deadline = started + cfg.timeout_s
    while time.monotonic() < deadline:
        watcher.poll()
        for p in procs:
            p.check_alive()
        quiet = time.monotonic() - watcher.last_event_at > cfg.settle_s
        if watcher.fraud_nodes and not watcher.open_challenges and quiet:
            break
        time.sleep(1.0)
    watcher.poll()
    asyncio.run(_claim_refunds(console, net, users, names, work))
    watcher.poll()
    ok = _judge(cfg, console, c, names, stakes_before, served, faulty.address, users)
    if explorer_url is not None:
        console.print(f"explorer: {explorer_url}")
    return ok, explorer_url


async def _submit_all(
    cfg: DemoConfig,
    console: Console,
    net: Devnet,
    users: list[Actor],
    nodes: list[Actor],
    urls: dict[str, str],
    names: dict[str, str],
    watcher: ChainWatcher,
    work: Path,
    procs: list[ServiceProcess],
) -> Counter[str]:
    """Users submit ``cfg.tasks`` tasks round-robin over the nodes; each user's tasks go in order."""
    served: Counter[str] = Counter()
    plan: dict[int, list[tuple[int, str]]] = {i: [] for i in range(len(users))}
    for t in range(cfg.tasks):
        plan[t % len(users)].append((t, nodes[t % len(nodes)].address.lower()))

    async def one_user(i: int, tasks: list[tuple[int, str]]) -> None:
        u = users[i]
        key = "0x" + bytes(u.account.key).hex()
        dep = net.config.state_dir / "deployment.json"
        async with Client.connect(net.anvil.url, dep, key, state_dir=work / f"user-{u.index}") as client:
            for t, node in tasks:
                prompt = PROMPTS[t % len(PROMPTS)]
                res = await client.submit_task(prompt, node_url=urls[node])
                served[node] += 1
                text = " ".join(res.output.split())[:60]
                console.print(
                    f"[dim]{time.monotonic() - watcher.started:6.1f}s[/dim] [magenta]task[/magenta]   "
                    f"{names[u.address.lower()]} → {names[node]}: {prompt!r} → {text!r}"
                )

    async def until_it_cheats() -> None:
        """The fault fires on a chance per task (``KIND:RATE``): a faulty node that happened to serve
        all its tasks honestly gets more (a demo whose cheater never cheats proves nothing)."""
        faulty = nodes[-1].address.lower()
        for t in range(cfg.tasks, cfg.tasks + MAX_EXTRA_TASKS):
            if await _fault_tasks(urls[faulty]) > 0:
                return
            console.print(
                f"[dim]{names[faulty]} has not cheated yet ({cfg.fault}): one more task for it[/dim]"
            )
            await one_user(t % len(users), [(t, faulty)])

    async def watch() -> None:
        while True:
            await asyncio.to_thread(watcher.poll)
            for p in procs:
                p.check_alive()
            await asyncio.sleep(1.0)

    watching = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(one_user(i, plan[i]) for i in range(len(users))))
        await until_it_cheats()
    finally:
        watching.cancel()
    return served


async def _fault_tasks(node_url: str) -> int:
    """How many tasks the node's injected fault fired on (its ``supernet_fault_tasks`` metric)."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        text = (await http.get(node_url + "/metrics")).text
    for line in text.splitlines():
        if line.startswith("supernet_fault_tasks "):
            return int(float(line.split()[1]))
    return 0


async def _claim_refunds(
    console: Console, net: Devnet, users: list[Actor], names: dict[str, str], work: Path
) -> None:
    """Each user claims the refunds of its proven-faulty tasks with the requests it signed."""
    dep = net.config.state_dir / "deployment.json"
    for u in users:
        key = "0x" + bytes(u.account.key).hex()
        async with Client.connect(net.anvil.url, dep, key, state_dir=work / f"user-{u.index}") as client:
            for r in await client.claim_refunds():
                console.print(
                    f"[cyan]refund[/cyan] {names[u.address.lower()]} claimed {eth(r.amount)} for task "
                    f"{r.task_id[:12]}… (challenge #{r.challenge_id})"
                )


def _judge(
    cfg: DemoConfig,
    console: Console,
    c: Contracts,
    names: dict[str, str],
    stakes_before: dict[str, int],
    served: Counter[str],
    faulty: str,
    users: list[Actor],
) -> bool:
    user_addrs = [u.address for u in users]
    node_table, user_table = summary_tables(c, names, stakes_before, served, {faulty.lower()}, user_addrs)
    console.rule("[bold]Summary")
    console.print(node_table)
    console.print(user_table)
    sm = c.service_manager
    faulty_slashed = sm.get_node(faulty).slash_count > 0
    honest_clean = all(sm.get_node(a).slash_count == 0 for a in stakes_before if a.lower() != faulty.lower())
    refunds = refunds_by_user(c)
    # Every fraud verdict's refund must have reached the user who signed the request.
    refunded = bool(refunds) and not unclaimed_refunds(c)
    checks = {
        "the faulty node was slashed": faulty_slashed,
        "no honest node was slashed": honest_clean,
        "users of proven-faulty tasks were refunded": refunded,
        f"all {cfg.tasks} tasks were served": sum(served.values()) == cfg.tasks,
    }
    for what, ok in checks.items():
        console.print(f"{'[green]✔' if ok else '[red]✘'} {what}[/]")
    total_refund = sum(refunds.values())
    console.print(f"refunds credited: {eth(total_refund)} to {len(refunds)} user(s)")
    return all(checks.values())
