"""Crash campaign: a real devnet under steady paid load, every role killed with SIGKILL.

Nodes, validators and the content store run as real ``supernet`` processes on a real Anvil (the
real contracts, the real model). Users submit paid tasks without pause. The campaign kills one
process at a time with SIGKILL at a chosen point of its work and restarts it on the same data:

- node, mid-generation (a task is running), mid-commit (right after it logs the broadcast of a
  batch commit), mid-redeem (right after it logs a redemption it is sending);
- validator, mid-verify (it logged the receipts it is checking), mid-challenge (it logged a
  challenge it is opening; one node cheats on a share of its calls so that challenges happen);
- the store, mid-write (while tasks run, their traces are being written).

A point that is not reached within ``--trigger-timeout`` seconds is killed at that moment and
counted as ``untriggered``. At the end the load stops, every process is up, the network drains,
and the chain and the databases are checked:

- ``tasks_lost``: tasks a node acknowledged (202) that never reached an end state (must be 0);
- ``double_charges``: (user, node) channels where the chain redeemed more than the fees of that
  user's finished tasks on that node (must be 0);
- ``duplicate_commits``: batch roots committed more than once (must be 0);
- ``batches_skipped_by_validators``: committed batches a validator has not processed (must be 0);
- ``honest_nodes_slashed`` (must be 0).

Run: ``make bench-reliability`` (about 15 minutes: 24 kills) or
``python scripts/bench_reliability.py --kills 6 --out none`` for a short run. Figures go to
docs/benchmarks/reliability.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from supernet.sdk.client import Client, ClientError
from supernet.sdk.devnet.network import ETHER, Devnet, DevnetConfig, pulled_model_manifest, register_models
from supernet.sdk.devnet.processes import ProcessError, ServiceProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = (
    "Name a colour.",
    "What is 3 + 4?",
    "Say hello in French.",
    "Name a planet.",
    "Give one word that rhymes with cat.",
    "What is the capital of Italy?",
)
KILL_POINTS = (
    ("node", "generation"),
    ("node", "commit"),
    ("node", "redeem"),
    ("validator", "verify"),
    ("validator", "challenge"),
    ("store", "write"),
)
MARKERS = {
    "commit": "broadcasting the commit of batch",
    "redeem": "redeeming ",
    "verify": "verifying batch",
    "challenge": "opening a challenge",
}
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
TERMINAL = ("done", "failed", "refused")


@dataclass
class Campaign:
    """What the campaign runs and how hard."""

    kills: int = 24
    nodes: int = 2
    validators: int = 2
    users: int = 3
    fault: str = "tokens:0.3"
    model: str = "smollm2-135m"
    max_new_tokens: int = 16
    trigger_timeout_s: float = 60.0
    ready_timeout_s: float = 300.0
    drain_timeout_s: float = 300.0
    seed: int = 7


@dataclass
class Service:
    """One killable process and how to tell it is ready again."""

    name: str
    kind: str
    proc: ServiceProcess
    ready: Callable[[int], None]
    """Blocks until the process is ready; given the log length at its (re)start."""
    url: str = ""
    db: Path | None = None
    address: str = ""


@dataclass
class Ledger:
    """What the users saw."""

    submitted: int = 0
    acknowledged: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # id -> (user, node, fee)
    final: dict[str, str] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)


def _store_ready(url: str, proc: ServiceProcess, timeout: float) -> None:
    """The embedded store answers its RPC API (Kubo's API is POST only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            if httpx.post(f"{url}/api/v0/version", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ProcessError(f"store not ready after {timeout:.0f} s:\n{proc.log_tail()}")


def start_network(cfg: Campaign, work: Path) -> tuple[Devnet, list[Service]]:
    """Anvil with the contracts, the store, the nodes (the last one cheats) and the validators."""
    manifest = pulled_model_manifest(cfg.model)
    if manifest is None:
        raise SystemExit(f"model {cfg.model!r} is not pulled: run `supernet model pull {cfg.model}`")
    net = Devnet.start(
        DevnetConfig(
            port=free_port(),
            nodes=cfg.nodes,
            validators=cfg.validators,
            users=cfg.users,
            model_manifest=manifest,
            model_name=cfg.model,
            state_dir=work / "devnet",
            block_time=1.0,
        ),
        populated=False,
    )
    c = net.contracts
    register_models(c, manifest, cfg.model)
    nodes, validators = net.by_role("node"), net.by_role("validator")
    for v in validators:
        c.as_account(v.account).service_manager.register_validator(5 * ETHER)
    for u in net.by_role("user"):
        for n in nodes:
            c.as_account(u.account).payments.deposit(n.address, ETHER // len(nodes))
    net.write_state()
    deployment = net.config.state_dir / "deployment.json"
    services: list[Service] = []

    store_port = free_port()
    store_url = f"http://127.0.0.1:{store_port}"
    store = ServiceProcess(
        "store",
        ["store", "serve", "--path", str(work / "store"), "--port", str(store_port)],
        work / "store.log",
    )
    services.append(
        Service(
            "store", "store", store, lambda _: _store_ready(store_url, store, cfg.ready_timeout_s), store_url
        )
    )
    for k, n in enumerate(nodes):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        conf = work / f"node-{k}.toml"
        conf.write_text(
            f'data_dir = "{work / f"node-{k}"}"\n[api]\nport = {port}\n'
            f'[chain]\nenabled = true\nrpc_url = "{net.anvil.url}"\ndeployment = "{deployment}"\n'
            f"auto_register = true\nstake_wei = {10 * ETHER}\n"
            f'[store]\nurl = "{store_url}"\n'
            f'[engine]\nmodel = "{cfg.model}"\nmax_new_tokens = {cfg.max_new_tokens}\n'
            "[batch]\nmax_size = 4\nmax_age_s = 2.0\n[redeem]\ninterval_s = 5.0\nmin_amount_wei = 1\n"
            "worth_factor = 0\n"
        )
        args = ["node", "run", "--config", str(conf)]
        if k == len(nodes) - 1 and cfg.fault:
            args += ["--fault", cfg.fault]
        env = {**THREADS, "SUPERNET_IDENTITY__PRIVATE_KEY": "0x" + bytes(n.account.key).hex()}
        proc = ServiceProcess(f"node-{k}", args, work / f"node-{k}.log", env)
        ready = _http_ready(proc, f"{url}/healthz", cfg.ready_timeout_s)
        services.append(
            Service(f"node-{k}", "node", proc, ready, url, work / f"node-{k}" / "node.sqlite3", n.address)
        )
    for k, v in enumerate(validators):
        db = work / f"validator-{k}.sqlite"
        args = ["validator", "run", "--rpc", net.anvil.url, "--deployment", str(deployment)]
        args += [
            "--store",
            store_url,
            "--db",
            str(db),
            "--poll",
            "0.5",
            "--model",
            cfg.model,
            "--threads",
            "1",
        ]
        env = {
            **THREADS,
            "SUPERNET_VALIDATOR_CHAIN__KEY": "0x" + bytes(v.account.key).hex(),
            "SUPERNET_VALIDATOR_MODEL__DTYPE": "float32",  # one model per validator: memory and start-up time
        }
        proc = ServiceProcess(f"validator-{k}", args, work / f"validator-{k}.log", env)
        services.append(
            Service(
                f"validator-{k}",
                "validator",
                proc,
                _log_ready(proc, cfg.ready_timeout_s),
                db=db,
                address=v.address,
            )
        )
    for s in services:
        s.proc.start()
        if s.kind == "store":
            s.ready(0)
    for s in services:
        s.ready(0)
    return net, services


def _log_size(proc: ServiceProcess) -> int:
    return proc.log_path.stat().st_size if proc.log_path.exists() else 0


def _http_ready(proc: ServiceProcess, url: str, timeout: float) -> Callable[[int], None]:
    return lambda _: proc.wait_http(url, timeout=timeout)


def _log_ready(proc: ServiceProcess, timeout: float) -> Callable[[int], None]:
    def ready(offset: int) -> None:
        deadline = time.monotonic() + timeout
        while True:  # the validator logs "... ready: ..." once per start, after the offset
            with proc.log_path.open("rb") as f:
                f.seek(offset)
                if b" ready: " in f.read():
                    return
            if time.monotonic() > deadline:
                raise ProcessError(f"{proc.name} not ready after {timeout:.0f} s:\n{proc.log_tail()}")
            proc.check_alive()
            time.sleep(0.25)

    return ready


async def load(net: Devnet, services: list[Service], work: Path, ledger: Ledger, stop: asyncio.Event) -> None:
    """Each user submits tasks one after another, round-robin over the nodes, until ``stop``."""
    nodes = [s for s in services if s.kind == "node"]
    dep = net.config.state_dir / "deployment.json"

    async def one_user(i: int, user: Any) -> None:
        key = "0x" + bytes(user.account.key).hex()
        async with Client.connect(
            net.anvil.url, dep, key, state_dir=work / f"user-{i}", timeout=20.0
        ) as client:
            t = i
            while not stop.is_set():
                node = nodes[t % len(nodes)]
                t += 1
                ledger.submitted += 1
                try:
                    p = await client.prepare(PROMPTS[t % len(PROMPTS)], node_url=node.url)
                    resp = await client.http.post(f"{node.url}/v1/tasks", json=p.task_body())
                except (ClientError, httpx.HTTPError) as exc:
                    ledger.errors[f"submit: {type(exc).__name__}"] += 1
                    await asyncio.sleep(1.0)
                    continue
                if resp.status_code != 202:
                    ledger.errors[f"submit: HTTP {resp.status_code}"] += 1
                    await asyncio.sleep(1.0)
                    continue
                client.accepted(p)
                ledger.acknowledged[p.task_id] = (user.address, node.address, p.fee)
                status = await _wait_terminal(client, node.url, p.task_id, stop)
                if status is not None:
                    ledger.final[p.task_id] = status
                    client.finished(p, status, None)

    await asyncio.gather(*(one_user(i, u) for i, u in enumerate(net.by_role("user"))))


async def _wait_terminal(client: Client, url: str, task_id: str, stop: asyncio.Event) -> str | None:
    """Poll the task until it ends (tolerating a node that is down); None if the campaign stops first."""
    while not stop.is_set():
        try:
            status = (await client.task(task_id, url)).status
            if status in TERMINAL:
                return status
        except (ClientError, httpx.HTTPError):
            pass
        await asyncio.sleep(0.5)
    return None


def _running_tasks(service: Service) -> int:
    try:
        counts = httpx.get(f"{service.url}/healthz", timeout=1.0).json()["tasks"]
        return int(counts.get("running", 0))
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def wait_for_point(service: Service, point: str, nodes: list[Service], timeout: float) -> bool:
    """Block until ``service`` is at ``point`` of its work; False if it was not reached in time."""
    deadline = time.monotonic() + timeout
    offset = _log_size(service.proc)
    marker = MARKERS.get(point, "").encode()
    while time.monotonic() < deadline:
        service.proc.check_alive()
        if point == "generation" and _running_tasks(service) > 0:
            return True
        if point == "write" and any(_running_tasks(n) > 0 for n in nodes):
            time.sleep(random.uniform(0.0, 0.5))  # a trace is written at each task's end
            return True
        if marker:
            with service.proc.log_path.open("rb") as f:
                f.seek(offset)
                if marker in f.read():
                    return True
        time.sleep(0.05)
    return False


def kill_and_restart(service: Service, rng: random.Random) -> float:
    """SIGKILL, a short pause, restart on the same data; returns seconds until ready again."""
    service.proc.kill()
    time.sleep(rng.uniform(0.2, 1.5))
    offset = _log_size(service.proc)
    started = time.monotonic()
    service.proc.start()
    service.ready(offset)
    return time.monotonic() - started


def _read_db(path: Path, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as c:
        return c.execute(query, args).fetchall()


def drained(net: Devnet, services: list[Service], committed_roots: set[str]) -> bool:
    """Every node has committed all its receipts (a node slashed out of the active set cannot
    commit any more, by design), and every validator processed every batch."""
    for s in services:
        if s.kind == "node" and s.db is not None and net.contracts.service_manager.get_node(s.address).active:
            if _running_tasks(s) > 0:
                return False
            pending = _read_db(
                s.db,
                "SELECT count(*) FROM receipts r LEFT JOIN batches b ON r.batch_id = b.id "
                "WHERE r.batch_id IS NULL OR b.status != 'committed'",
            )[0][0]
            if pending:
                return False
    for s in services:
        if s.kind == "validator" and s.db is not None and s.db.exists():
            if not committed_roots <= processed_roots(s.db):
                return False
    return True


def processed_roots(validator_db: Path) -> set[str]:
    """Roots (0x hex) of the batches a validator has finished with (checked, skipped or missing:
    a missing one is retried and then challenged for availability, never dropped)."""
    rows = _read_db(validator_db, "SELECT root FROM batches WHERE status != 'pending'")
    return {"0x" + r[0].lower().removeprefix("0x") for r in rows}


def committed_batches(net: Devnet) -> list[dict[str, Any]]:
    """Every BatchCommitted event since the deployment."""
    tm = net.contracts.task_manager
    logs = tm.contract.events.BatchCommitted.get_logs(from_block=net.contracts.deployment.deploy_block)
    return [{"node": ev["args"]["node"], "root": "0x" + bytes(ev["args"]["root"]).hex()} for ev in logs]


def audit(cfg: Campaign, net: Devnet, services: list[Service], ledger: Ledger) -> dict[str, Any]:
    """The chain and databases after the drain."""
    c = net.contracts
    batches = committed_batches(net)
    roots = Counter(b["root"] for b in batches)
    nodes = [s for s in services if s.kind == "node"]
    lost = []
    for task_id, (_user, node_addr, _fee) in ledger.acknowledged.items():
        node = next(n for n in nodes if n.address == node_addr)
        assert node.db is not None
        row = _read_db(node.db, "SELECT status FROM tasks WHERE id = ?", (task_id.lower(),))
        if not row or row[0][0] not in TERMINAL:
            lost.append(task_id)
    double = []
    billed_unacknowledged = 0
    for node in nodes:
        assert node.db is not None
        fees: Counter[str] = Counter()
        for task_id, user, fee, status in _read_db(node.db, "SELECT id, user, fee, status FROM tasks"):
            if status == "done":
                fees[user.lower()] += int(fee)
                if task_id not in {t.lower() for t in ledger.acknowledged}:
                    billed_unacknowledged += 1
        for u in net.by_role("user"):
            redeemed = c.payments.channel(u.address, node.address).redeemed
            if redeemed > fees[u.address.lower()]:
                double.append(
                    {
                        "user": u.address,
                        "node": node.address,
                        "redeemed": redeemed,
                        "fees": fees[u.address.lower()],
                    }
                )
    skipped = {}
    for v in (s for s in services if s.kind == "validator"):
        assert v.db is not None
        seen = processed_roots(v.db)
        skipped[v.name] = sum(1 for b in batches if b["root"] not in seen and b["node"] != v.address)
    faulty = nodes[-1].address if cfg.fault else None
    honest_slashed = [
        n.name for n in nodes if n.address != faulty and c.service_manager.get_node(n.address).slash_count
    ]
    return {
        "tasks_lost": len(lost),
        "lost_task_ids": lost,
        "double_charges": len(double),
        "double_charge_detail": double,
        "duplicate_commits": sum(k - 1 for k in roots.values()),
        "batches_committed": len(batches),
        "batches_skipped_by_validators": sum(skipped.values()),
        "skipped_by_validator": skipped,
        "honest_nodes_slashed": len(honest_slashed),
        "faulty_node_slashes": c.service_manager.get_node(faulty).slash_count if faulty else None,
        "tasks_billed_without_acknowledgement": billed_unacknowledged,
    }


def run(cfg: Campaign, work: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole campaign; returns the figures."""
    rng = random.Random(cfg.seed)
    random.seed(cfg.seed)
    started = time.monotonic()
    net, services = start_network(cfg, work)
    say(f"network up in {time.monotonic() - started:.0f} s: {', '.join(s.name for s in services)}")
    ledger = Ledger()
    kills: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    load_thread = threading.Thread(
        target=lambda: loop.run_until_complete(load(net, services, work, ledger, stop))
    )
    load_thread.start()
    try:
        nodes = [s for s in services if s.kind == "node"]
        for k in range(cfg.kills):
            kind, point = KILL_POINTS[k % len(KILL_POINTS)]
            candidates = [s for s in services if s.kind == kind]
            target = candidates[rng.randrange(len(candidates))]
            reached = wait_for_point(target, point, nodes, cfg.trigger_timeout_s)
            restart_s = kill_and_restart(target, rng)
            kills.append(
                {
                    "service": target.name,
                    "point": point,
                    "triggered": reached,
                    "restart_s": round(restart_s, 1),
                }
            )
            say(
                f"kill {k + 1}/{cfg.kills}: {target.name} mid-{point}"
                f"{'' if reached else ' (not reached: killed at the timeout)'}; back in {restart_s:.0f} s"
                f" — {len(ledger.acknowledged)} tasks acknowledged so far"
            )
        loop.call_soon_threadsafe(stop.set)
        load_thread.join(120)
        say("load stopped; draining (every receipt committed, every batch processed)…")
        deadline = time.monotonic() + cfg.drain_timeout_s
        while time.monotonic() < deadline:
            for s in services:
                s.proc.check_alive()
            if drained(net, services, {b["root"] for b in committed_batches(net)}):
                break
            time.sleep(2.0)
        else:
            say("drain timed out: the audit below says what is left")
        figures = audit(cfg, net, services, ledger)
    finally:
        if not stop.is_set():
            loop.call_soon_threadsafe(stop.set)
        load_thread.join(60)
        for s in reversed(services):
            s.proc.stop()
        net.stop()
    by_point = Counter(f"{k['service'].split('-')[0]} mid-{k['point']}" for k in kills)
    return {
        "kills": len(kills),
        "kills_by_point": dict(sorted(by_point.items())),
        "kills_untriggered": sum(not k["triggered"] for k in kills),
        "tasks_submitted": ledger.submitted,
        "tasks_acknowledged": len(ledger.acknowledged),
        "tasks_done": sum(1 for s in ledger.final.values() if s == "done"),
        "tasks_failed": sum(1 for s in ledger.final.values() if s != "done"),
        "submit_errors": dict(ledger.errors),
        **figures,
        "kill_log": kills,
        "seconds": round(time.monotonic() - started),
    }


def write_report(figures: dict[str, Any], out: Path, command: str) -> None:
    """docs/benchmarks/reliability.json and .md."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "reliability.json").write_text(json.dumps({"measured_at": stamp, **figures}, indent=1) + "\n")
    rows = [
        ("kills (SIGKILL, every role)", figures["kills"], "≥ 20"),
        ("kills whose point was reached", figures["kills"] - figures["kills_untriggered"], ""),
        ("tasks submitted", figures["tasks_submitted"], ""),
        ("tasks acknowledged (202)", figures["tasks_acknowledged"], ""),
        ("tasks done / failed", f"{figures['tasks_done']} / {figures['tasks_failed']}", ""),
        ("**tasks_lost**", figures["tasks_lost"], "0"),
        ("**double_charges**", figures["double_charges"], "0"),
        ("**duplicate_commits**", figures["duplicate_commits"], "0"),
        ("**batches_skipped_by_validators**", figures["batches_skipped_by_validators"], "0"),
        ("honest nodes slashed", figures["honest_nodes_slashed"], "0"),
        ("batches committed", figures["batches_committed"], ""),
    ]
    lines = [
        "# Crash campaign",
        "",
        f"Reproduce: `make bench-reliability` (`{command}`; measured {stamp}, {figures['seconds']} s).",
        "Raw figures and every kill: [reliability.json](reliability.json).",
        "",
        "A devnet on a real Anvil (nodes, validators and the store as real processes, the real model) under",
        "steady paid load; each kill is a SIGKILL at a point of the process's work, then a restart on the",
        "same data. The last node cheats on a share of its calls so that validators open challenges.",
        "",
        "| figure | value | must be |",
        "|---|---:|---|",
        *[f"| {name} | {value} | {goal} |" for name, value, goal in rows],
        "",
        "Kills by point: " + ", ".join(f"{p} {n}" for p, n in figures["kills_by_point"].items()) + ".",
        f"Tasks a node finished whose 202 the user never got (killed between storing and answering): "
        f"{figures['tasks_billed_without_acknowledgement']}.",
        "",
    ]
    (out / "reliability.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=Campaign.kills)
    ap.add_argument("--seed", type=int, default=Campaign.seed)
    ap.add_argument("--work", type=Path, default=None, help="keep logs and state here")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="report folder, or 'none'")
    args = ap.parse_args()
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the child processes and Anvil are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = Campaign(kills=args.kills, seed=args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="supernet-crash-"))
    figures = run(cfg, work)
    print(json.dumps({k: v for k, v in figures.items() if k != "kill_log"}, indent=1))
    if args.out != "none":
        write_report(
            figures,
            Path(args.out),
            f".venv/bin/python scripts/bench_reliability.py --kills {cfg.kills}",
        )
    bad = [
        k
        for k in (
            "tasks_lost",
            "double_charges",
            "duplicate_commits",
            "batches_skipped_by_validators",
            "honest_nodes_slashed",
        )
        if figures[k]
    ]
    if bad:
        print(f"FAILED: {', '.join(bad)} not 0 (logs and state in {work})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
