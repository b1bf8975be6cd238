"""Adversarial / demanding-operator review of what node and validator operators run and read:
``supernet node run`` and ``supernet validator run`` (their settings: TOML, ``SUPERNET_*``
environment, the shared ``--rpc``/``--deployment``/``--store`` vocabulary), what they check at
start, and what they report while running (``/healthz``, logs, ``--help``).

Not repeated (earlier reviews): key files, keystores and malformed keys in errors, section typos,
``promise_s`` below the batch age (tests/unit/test_review_cli_config.py); money commands, units,
lying RPCs, tip ceilings (tests/integration/test_review_money_keys.py); the users' ``task`` CLI
(tests/integration/test_review_task_cli.py); a validator with no ether for a vote bond keeps
stepping (tests/unit/test_review_validator_game.py).

Real parts: a real Anvil with the compiled contracts (``network``), the real node service
(`NodeService`, its `Database`, `Batcher` and `Web3Chain`) whose kernel is the FAKE executor of
tests/node_fixtures.py (the model plays no part here), the real embedded content store, the real
`Validator` (its chain client, follower, database, disputes) with a stand-in scorer that only names
the served weights (no LLM call is scored), and the real ``supernet`` CLI (a subprocess, or typer's
runner in process; where it would go on to load the model, its ``_serve`` is replaced by a recorder
of the settings it was handed: instrumentation, named so in the test).

Found:

1. HIGH  A node restarted without the chain (``chain.enabled`` false: dev mode) over the database
   of its on-chain life "commits" its pending and sealed batches locally: `Batcher.commit`
   (node/supernet/node/service/batcher.py, ``if self.chain is None: chain_id = batch.id``) marks
   them committed with their local id standing in for a chain batch id. Restarted on the chain
   again, the node finds nothing unfinished: those receipts, each served with a signed promise to
   commit it within ``promise_s``, are never committed on chain, and every one is a slashable
   omission claim (`OmissionManager`). Nothing warns: dev mode is not logged, and the database
   does not remember which chain (EIP-712 domain) its receipts were signed for.
   (test_attack_a_node_restarted_off_chain_never_commits_the_receipts_it_promised, now
   test_defence_a_node_restarted_off_chain_is_refused_over_its_chain_database; FIXED: the node's
   database records the EIP-712 domain it signs for and a dev-mode or other-domain start over it is
   refused (`Database.bind_domain`, `runner.open_bound`))
2. MEDIUM  Half of the chain configuration silently runs a node off chain: ``supernet node run``
   sets ``chain.enabled`` only when ``--rpc`` and ``--deployment`` are both given as options or
   their env variables (``$SUPERNET_RPC_URL``, ``$SUPERNET_DEPLOYMENT``; node/supernet/node/service/cli.py,
   ``if "rpc_url" in chain and "deployment" in chain``). ``$SUPERNET_RPC_URL`` (the README's shared
   vocabulary) with ``[chain] deployment`` in the TOML, or one of the two env variables missing in
   a new shell, starts the node in dev mode with no error and no warning: the trigger of finding 1,
   and a node that earns nothing while its registration on chain stays active.
   (test_attack_half_a_chain_configuration_runs_the_node_off_chain_without_a_word, now
   test_defence_half_a_chain_configuration_is_refused_in_one_line; FIXED: either chain setting from any
   source turns the chain on and both are then required; dev mode is logged at WARNING)
3. MEDIUM  A validator starts against a content store it cannot reach (a typo'd ``--store``, Kubo
   down): `Validator.setup` never touches the store, although ``validator run`` catches
   "unreachable store" at start by its own comment (validator/supernet/validator/cli.py
   ``_serve``). Each step then succeeds (each batch's trouble is isolated), so ``/healthz`` says
   ``ok``, and every sampled receipt of an honest node is recorded as data the node withholds
   (a `StoreUnavailableError` of its own store is a `ManifestError` like a missing block,
   verifier.py `load_manifest`): on its way to the seed seal at the first retry, the manifest
   claim and the bonded availability claim (`Availability._retry` -> ``_open``), the validator's
   gas and claim fees spent against nodes that serve their data.
   (test_attack_a_validator_starts_against_a_store_it_cannot_reach_and_blames_the_nodes, now
   test_defence_a_validator_refuses_a_store_it_cannot_reach_and_blames_no_node; FIXED: `Validator.setup`
   asks the store for its version; its own store down at run time is `OwnStoreError`, never a node's
   missing data)
4. MEDIUM  A node that cannot pay for its commits (its wallet empty: "Commits still pay from the
   wallet alone", docs/node.md) answers ``/healthz`` 200 ``ok`` and keeps admitting paid tasks,
   each with a signed commit promise it cannot keep: the failure is one WARNING line per retry
   (`Batcher.run_forever`), and clients, which pass over a node whose ``/healthz`` fails, keep
   choosing it until its promises fall due and its stake is slashed.
   (test_attack_a_node_that_cannot_pay_for_its_commits_reports_healthy_and_takes_more_tasks, now
   test_defence_a_node_that_cannot_pay_for_its_commits_reports_it_and_takes_no_tasks; FIXED:
   `Batcher.commit_risk`: /healthz 503 ``commits_at_risk`` with a reason, new tasks refused 503, an
   ERROR log)
5. LOW  ``poll_interval_s`` has no upper bound (``gt=0`` only; TOML ``inf`` and ``1e12`` load):
   the validator steps once and then sleeps for good, its reveals loop too (a sealed vote never
   opened loses its bond), while ``/healthz`` says ``ok`` forever, since its staleness bound is
   ``max(60, 10 * poll_interval_s)`` (`Validator._ops_server`).
   (test_attack_an_endless_poll_interval_is_accepted_and_health_never_goes_stale, now
   test_defence_an_endless_poll_interval_is_refused_and_health_goes_stale; FIXED: ``poll_interval_s``
   finite and at most 60 s; the staleness bound at most 600 s)
6. LOW  The RPC's API key leaks: hosted RPCs carry it in the URL path (``.../v3/<key>``), and when
   the chain cannot be reached the validator's failing step is stored in ``health.last_error`` and
   logged at WARNING as ``f"{type(exc).__name__}: {exc}"`` (`Validator._steps`), where the HTTP
   client's error names the URL with its path: ``/healthz`` (``lastError``) and the log pipeline
   publish the key. (Read in the code, not tested: the node's commit warnings, `Batcher.run_forever`,
   print the error the same way.)
   (test_attack_the_rpc_api_key_in_its_url_leaks_through_healthz_and_logs, now
   test_defence_the_rpc_api_key_in_its_url_stays_out_of_healthz_and_logs; FIXED: configured URLs
   redacted from stored and logged errors, `supernet.sdk.redact`)

Checked and holding:

- ``supernet node run --help``, ``supernet validator run --help``, ``supernet node withdraw --help``
  and ``supernet validator status`` with the node's and the validator's keys, the keystore
  passphrase and an RPC URL carrying an API key in the environment print none of them (typer shows
  an env variable's name, never its value) (test_defence_help_and_status_show_no_secret).
- A deployment file for another chain id is refused at the validator's start, before anything is
  signed (test_defence_a_deployment_of_another_chain_stops_the_validator_at_start).
- The two shared env variables together put the node on the chain (test 2's control case).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chain_fixtures import Actors
from fastapi.testclient import TestClient
from node_fixtures import FakeExecutor, signed_task
from supernet.node.service import cli as node_cli
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import NodeSettings
from supernet.node.service.models import TaskStatus
from supernet.node.service.runner import NodeService
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import mine
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import in_process_client
from typer.testing import CliRunner

FEE = 10**12  # the node's default task fee (NodeSettings.pricing)


# ------------------------------------------------------------------------------------------------
# helpers: a node service on the real chain (FAKE executor), started and stopped on one data dir
# ------------------------------------------------------------------------------------------------


class Started:
    """One start of a node service on ``data_dir``: ``chain`` None is dev mode (what `build_node`
    builds when ``chain.enabled`` is false)."""

    def __init__(self, service: NodeService, http: httpx.AsyncClient) -> None:
        self.service, self.http = service, http

    @property
    def db(self) -> Any:
        assert self.service.ctx is not None
        return self.service.ctx.db


async def _start(
    network: Contracts,
    actors: Actors,
    data_dir: Path,
    store: StoreClient,
    *,
    on_chain: bool,
    max_age_s: float = 60.0,  # a receipt waits for its batch: the usual case
) -> Started:
    cfg = NodeSettings.load(
        None, data_dir=data_dir, batch={"max_size": 16, "max_age_s": max_age_s}, log_level="WARNING"
    )
    chain = Web3Chain(network, actors.node) if on_chain else None
    service = NodeService(cfg, FakeExecutor(), actors.node, store, chain)
    await service.setup()
    assert service.app is not None
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app),
        base_url="http://node",
        auth=ReadGrantAuth(actors.users[0], actors.node.address, network.domain),
    )
    return Started(service, http)


async def _stop(node: Started) -> None:
    await node.http.aclose()
    await node.service.cleanup()


async def _done_task(node: Started, network: Contracts, actors: Actors, text: str, cumulative: int) -> str:
    body = signed_task(actors.users[0], actors.node.address, network.domain, text, cumulative=cumulative)
    r = await node.http.post("/v1/tasks", json=body)
    assert r.status_code == 202, r.text
    tid = str(r.json()["id"])
    assert node.service.ctx is not None
    await node.service.ctx.worker.wait(tid)
    task = node.db.task(tid)
    assert task is not None and task.status is TaskStatus.DONE, task
    return tid


async def _run_batcher_for(node: Started, seconds: float) -> None:
    """The node's batcher as `NodeService.run_forever` runs it, for ``seconds``."""
    batcher = node.service.batcher
    assert batcher is not None
    task = asyncio.create_task(batcher.run_forever())
    await asyncio.sleep(seconds)
    batcher.stop()
    await asyncio.wait_for(task, 30)


def _roots_committed_by(c: Contracts, node: str) -> set[str]:
    logs = c.task_manager.contract.events.BatchCommitted().get_logs(
        from_block=c.deployment.deploy_block, argument_filters={"node": node}
    )
    return {"0x" + bytes(e["args"]["root"]).hex() for e in logs}


@pytest.fixture()
async def store(tmp_path: Path) -> AsyncIterator[StoreClient]:
    client = in_process_client(tmp_path / "store")
    try:
        yield client
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------------------------
# 1. HIGH: a restart off chain "commits" the promised receipts locally, for good
# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_a_node_restarted_off_chain_is_refused_over_its_chain_database(
    network: Contracts, actors: Actors, tmp_path: Path, store: StoreClient
) -> None:
    """The honest operator's sequence: the node runs on the chain and serves a paid task (its
    receipt signed, with the node's signed promise to commit it within ``promise_s``, waiting for
    its batch); it is restarted with the chain off for a minute (finding 2: a shell that lacks
    ``$SUPERNET_DEPLOYMENT``), then restarted on the chain again.

    In dev mode `Batcher.commit` marks the batch it cuts committed with its local id as the chain
    batch id (batcher.py ``if self.chain is None``): after the restart on the chain nothing is
    unfinished, so the receipt never reaches the chain and its promise is broken: an omission claim
    slashes the node. Safe: dev mode refuses a database that holds receipts signed for a chain
    (or at least never "commits" them), so that back on the chain they are committed."""
    data = tmp_path / "node"
    on_chain = await _start(network, actors, data, store, on_chain=True)
    try:
        tid = await _done_task(on_chain, network, actors, "what is 2 + 2?", FEE)
        promise = on_chain.db.promise(tid)
        assert promise is not None, "the receipt went out with a signed commit promise"
    finally:
        await _stop(on_chain)

    refused: BaseException | None = None
    try:
        off = await _start(network, actors, data, store, on_chain=False)  # `chain.enabled = false`
    except Exception as exc:  # the safe outcome: a dev-mode start over a chain's database
        refused = exc
    else:
        try:
            batcher = off.service.batcher
            assert batcher is not None
            await batcher.flush()  # what its run_forever does once max_age_s has passed
        finally:
            await _stop(off)

    # back on the chain, batches cut at once: a receipt still pending is committed within the run
    back = await _start(network, actors, data, store, on_chain=True, max_age_s=0.2)
    try:
        await _run_batcher_for(back, 3.0)
        receipt = back.db.receipt(tid)
        assert receipt is not None
        batch = back.db.batch(receipt.batch_id) if receipt.batch_id is not None else None
    finally:
        await _stop(back)
    on_chain_roots = _roots_committed_by(network, actors.node.address)
    committed = batch is not None and batch.root in on_chain_roots
    assert refused is not None or committed, (
        f"the dev-mode restart marked batch {batch and batch.id} committed as chain batch "
        f"{batch and batch.chain_batch_id} without any transaction (status {batch and batch.status!r}); "
        f"back on the chain the node commits nothing more (roots on chain: {sorted(on_chain_roots)}), "
        f"so the receipt of task {tid}, promised committed by {promise[0]}, is a slashable omission"
    )


# ------------------------------------------------------------------------------------------------
# 2. MEDIUM: half of the chain configuration runs the node off chain, silently
# ------------------------------------------------------------------------------------------------


def _node_run(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> tuple[Any, Any]:
    """``supernet node run ARGS`` in process; its ``_serve`` (which would build the kernel and load
    the model) replaced by a recorder of the settings the command built (instrumentation).
    Returns (the runner's result, the settings handed to ``_serve`` or None)."""
    seen: list[NodeSettings] = []

    async def record(settings: NodeSettings, faults: list[str], fault_seed: int) -> None:
        seen.append(settings)

    monkeypatch.setattr(node_cli, "_serve", record)
    for var in ("SUPERNET_RPC_URL", "SUPERNET_DEPLOYMENT", "SUPERNET_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(node_cli.app, ["run", *args], env=env)
    return result, (seen[0] if seen else None)


def test_defence_half_a_chain_configuration_is_refused_in_one_line(
    actors: Actors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three operators who each meant the chain: (a) ``$SUPERNET_RPC_URL`` exported as the README's
    shared vocabulary says, the deployment in node.toml's ``[chain] deployment`` (a documented key);
    (b) a new shell where ``$SUPERNET_DEPLOYMENT`` was not exported; (c) ``--deployment`` given,
    the RPC in ``[chain] rpc_url``. Each gets a node in dev mode (``chain.enabled`` false: no
    deposit check, batches "committed" locally, receipts signed for chain id 31337 and the zero
    contract), exit 0, no error. Safe: the node is on the chain, or the command refuses the half
    configuration. Control: both flags (or both env variables) put it on the chain."""
    rpc, dep = "http://127.0.0.1:8545", str(tmp_path / "deployment.json")  # read only by `_serve`
    key = {"SUPERNET_IDENTITY__PRIVATE_KEY": "0x" + bytes(actors.node.key).hex()}
    data = f'data_dir = "{tmp_path / "node"}"\n'
    with_dep = tmp_path / "with-deployment.toml"
    with_dep.write_text(data + f'[chain]\ndeployment = "{dep}"\n')
    with_rpc = tmp_path / "with-rpc.toml"
    with_rpc.write_text(data + f'[chain]\nrpc_url = "{rpc}"\n')
    plain = tmp_path / "plain.toml"
    plain.write_text(data)

    control, settings = _node_run(
        monkeypatch, ["--config", str(plain)], {**key, "SUPERNET_RPC_URL": rpc, "SUPERNET_DEPLOYMENT": dep}
    )
    assert control.exit_code == 0 and settings is not None and settings.chain.enabled, control.output

    off_chain = []
    for name, args, env in (
        (
            "(a) $SUPERNET_RPC_URL + [chain] deployment",
            ["--config", str(with_dep)],
            {"SUPERNET_RPC_URL": rpc},
        ),
        ("(b) --rpc, no $SUPERNET_DEPLOYMENT", ["--config", str(plain), "--rpc", rpc], {}),
        ("(c) --deployment + [chain] rpc_url", ["--config", str(with_rpc), "--deployment", dep], {}),
    ):
        result, settings = _node_run(monkeypatch, args, {**key, **env})
        refused = result.exit_code != 0 and settings is None
        if not refused and (settings is None or not settings.chain.enabled):
            off_chain.append(f"{name}: exit {result.exit_code}, dev mode, output {result.output!r}")
    assert not off_chain, "a node meant for the chain started off it without a word:\n" + "\n".join(off_chain)


# ------------------------------------------------------------------------------------------------
# 3. MEDIUM: a validator starts against a store it cannot reach, reports ok, and blames the nodes
# ------------------------------------------------------------------------------------------------


class NamesWeights:
    """Stand-in scorer: names the served weights; never asked to score (no LLM call is checked
    here: the data is never read)."""

    weights_id = "0x" + "ab" * 32
    eos_ids = (0,)
    vocab_size = 100
    tokenizer = None
    max_positions = 1024
    dtype = "float32"

    def score_many(self, requests: Any) -> list[Any]:
        raise AssertionError("no LLM call to score")

    def decode(self, ids: Any) -> str:
        return ""


def _closed_port_url() -> str:
    from supernet.sdk.devnet.processes import free_port

    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: a typo'd --store, Kubo down


def _validator_settings(network: Contracts, who: Any, tmp_path: Path, **extra: Any) -> Any:
    from supernet.validator.config import ValidatorSettings

    dep = network.deployment.save(tmp_path / "deployment.json")
    return ValidatorSettings(
        chain={
            "rpc_url": network.w3.provider.endpoint_uri,  # type: ignore[attr-defined]
            "deployment": dep,
            "key": "0x" + bytes(who.key).hex(),
        },
        db_path=tmp_path / "validator.sqlite",
        **extra,
    )


@pytest.mark.anvil
async def test_defence_a_validator_refuses_a_store_it_cannot_reach_and_blames_no_node(
    network: Contracts, actors: Actors, tmp_path: Path, store: StoreClient
) -> None:
    """``supernet validator run --store URL`` where nothing answers at URL. `Validator.setup`
    (validator/supernet/validator/service.py) connects to the chain, checks the RPC, loads the
    scorer, registers and declares, but never asks the store anything: it starts. Its first step
    then runs without raising (so ``/healthz`` is 200 ``ok``: `_steps` records it as a success)
    while every sampled receipt of the honest node, whose manifest is in the node's own store, is
    recorded as data the node does not serve (``missing``, ``retrying``): after
    ``availability_retries`` it seals the seed and claims the entry on chain with a bond.

    Safe: the start fails with one line (``validator cannot start: ...``, the CLI's own promise for
    "unreachable store"), or at least no receipt is charged to the node for the validator's store."""
    from supernet.sdk.errors import SupernetError
    from supernet.validator.service import Validator

    # an honest node commits a batch on chain, its manifest in its own (reachable) store
    node = await _start(network, actors, tmp_path / "node", store, on_chain=True, max_age_s=0.2)
    try:
        await _done_task(node, network, actors, "what is 2 + 2?", FEE)
        await _run_batcher_for(node, 2.0)
        [row] = [b for b in [node.db.batch(1)] if b is not None]
        assert row.status == "committed", row
    finally:
        await _stop(node)
    mine(network.w3, 3)  # the batch's seed block

    settings = _validator_settings(network, actors.validators[0], tmp_path, store_url=_closed_port_url())
    v = Validator(settings, scorer=NamesWeights())
    try:
        await v.setup()
    except SupernetError:
        return  # refused at start: the safe outcome
    try:
        await v.step()  # no exception: `_steps` sets health.last_success, /healthz answers "ok"
        blamed = v.db.missing("retrying")
    finally:
        await v.cleanup()
    assert not blamed, (
        f"the validator started with an unreachable store, stepped without error (/healthz ok), and "
        f"recorded {len(blamed)} receipt(s) of the honest node as withheld data on their way to a "
        f"bonded availability claim: {[(m.batch_id, m.index, m.reason[:120]) for m in blamed]}"
    )


# ------------------------------------------------------------------------------------------------
# 4. MEDIUM: a node that cannot pay for its commits reports healthy and takes more tasks
# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_a_node_that_cannot_pay_for_its_commits_reports_it_and_takes_no_tasks(
    network: Contracts, actors: Actors, tmp_path: Path, store: StoreClient
) -> None:
    """The node's wallet is empty (gas spent, never topped up; docs/node.md: "Commits still pay
    from the wallet alone: fund it"). Its batch commit fails (insufficient funds) and is retried
    every `RETRY_S` with one WARNING line. Meanwhile ``GET /healthz`` answers 200 ``ok`` (api.py:
    ``ok`` whenever it is accepting) and ``POST /v1/tasks`` keeps admitting paid tasks, each served
    with a signed promise to commit it within ``promise_s`` that it cannot keep: once they fall due,
    every such receipt is a slashable omission. Clients ask ``/healthz`` before paying and pass
    over a node that fails it, so an honest health answer would stop the flow.

    Safe: while commits cannot be paid for, ``/healthz`` is not 200 ``ok``, or new tasks are refused."""
    from supernet.sdk.chain.anvil import set_balance

    node = await _start(network, actors, tmp_path / "node", store, on_chain=True, max_age_s=0.2)
    try:
        set_balance(network.w3, actors.node.address, 0)
        await _done_task(node, network, actors, "first", FEE)
        await _run_batcher_for(node, 2.0)  # its commit fails: no ether for gas
        assert node.db.unfinished_batches(), "the commit cannot have landed"
        assert not _roots_committed_by(network, actors.node.address)
        health = await node.http.get("/healthz")
        body = signed_task(actors.users[0], actors.node.address, network.domain, "second", cumulative=2 * FEE)
        admitted = await node.http.post("/v1/tasks", json=body)
    finally:
        await _stop(node)
    assert not (health.status_code == 200 and admitted.status_code == 202), (
        f"with every commit failing for want of gas, /healthz answered {health.status_code} "
        f"{health.json()} and a new paid task was admitted ({admitted.status_code}): another "
        "promise the node cannot keep"
    )


# ------------------------------------------------------------------------------------------------
# 5. LOW: an endless poll interval is accepted, and health never goes stale
# ------------------------------------------------------------------------------------------------


def test_defence_an_endless_poll_interval_is_refused_and_health_goes_stale(
    actors: Actors, tmp_path: Path
) -> None:
    """``poll_interval_s = inf`` (TOML has ``inf``; or ``1e12``, or ``--poll`` in milliseconds by
    mistake) passes ``gt=0``. `Validator._steps` then waits that long after its first step, and
    `_reveals` as long between reveal rounds (a vote sealed and not opened in its reveal phase loses
    its bond), while the ops server's staleness bound is ``max(60, 10 * poll_interval_s)``
    (`Validator._ops_server`): ``/healthz`` stays 200 ``ok`` however long ago the last step was.

    The ops app and its bound are the real ones of a `Validator` built from the TOML; the state
    "one step, two hours ago" is set on its `Health` (what `_steps` leaves after that step).
    Safe: the settings refuse a poll interval no chain window allows (or ``/healthz`` goes stale)."""
    from pydantic import ValidationError
    from supernet.validator.config import ValidatorSettings
    from supernet.validator.service import Validator

    toml = tmp_path / "validator.toml"
    key = "0x" + bytes(actors.validators[0].key).hex()
    chain = f'[chain]\ndeployment = "{tmp_path / "dep.json"}"\nkey = "{key}"\n'
    toml.write_text("poll_interval_s = inf\nhttp_port = 0\n" + chain)
    try:
        settings = ValidatorSettings.from_toml(toml)
    except ValidationError:
        return  # refused at load: the safe outcome
    v = Validator(settings, scorer=NamesWeights())
    server = v._ops_server()
    assert server is not None
    v.health.ready, v.health.last_success = True, time.time() - 7200
    r = TestClient(server.config.app).get("/healthz")
    assert r.status_code != 200, (
        f"poll_interval_s = {settings.poll_interval_s} was accepted; two hours after its last step "
        f"the validator's /healthz answers {r.status_code} {r.json()}"
    )


# ------------------------------------------------------------------------------------------------
# Checked and holding
# ------------------------------------------------------------------------------------------------


def test_defence_help_and_status_show_no_secret(actors: Actors, tmp_path: Path) -> None:
    """With the validator's and the node's keys, a keystore passphrase and an RPC URL carrying an
    API key in the environment, ``supernet node run --help``, ``supernet validator run --help``
    and ``supernet validator status`` print none of them (typer shows an option's env variable's
    name, never its value)."""
    node_key, validator_key = "0x" + "cd" * 32, "0x" + bytes(actors.validators[0].key).hex()
    secrets = (node_key[2:], validator_key[2:], "hunter2-passphrase", "APIKEYSECRET")
    env = {
        **os.environ,
        "SUPERNET_IDENTITY__PRIVATE_KEY": node_key,
        "SUPERNET_VALIDATOR_CHAIN__KEY": validator_key,
        "SUPERNET_KEY_PASSWORD": "hunter2-passphrase",
        "SUPERNET_RPC_URL": "https://rpc.example/v3/APIKEYSECRET",
        "COLUMNS": "200",
    }
    exe = str(Path(sys.executable).parent / "supernet")
    outputs = []
    for args in (["node", "run", "--help"], ["validator", "run", "--help"], ["node", "withdraw", "--help"]):
        out = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout + out.stderr)
    # `validator status` over a real validator database (created by the validator's own class)
    from supernet.validator.db import Database

    Database(tmp_path / "v.sqlite").close()
    out = subprocess.run(
        [exe, "validator", "status", "--db", str(tmp_path / "v.sqlite")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cursor"] == 0
    outputs.append(out.stdout + out.stderr)
    leaked = [s for s in secrets for text in outputs if s.lower() in text.lower()]
    assert not leaked, leaked


@pytest.mark.anvil
async def test_defence_a_deployment_of_another_chain_stops_the_validator_at_start(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A deployment file for another chain (a mainnet file on a testnet RPC, or the reverse) is
    refused in `Validator.setup` by `Contracts.connect` before anything is signed or registered:
    the CLI's one line ``validator cannot start: RPC is on chain ..., deployment is for ...``."""
    from supernet.sdk.errors import SupernetError
    from supernet.validator.service import Validator

    settings = _validator_settings(network, actors.outsider, tmp_path, register_stake_wei=10**18)
    doc = json.loads(settings.chain.deployment.read_text())
    doc["chainId"] = network.domain.chain_id + 1
    settings.chain.deployment.write_text(json.dumps(doc))
    v = Validator(settings, scorer=NamesWeights())
    with pytest.raises(SupernetError, match="chain"):
        await v.setup()
    assert not network.service_manager.is_active_validator(actors.outsider.address)


# ------------------------------------------------------------------------------------------------
# 6. LOW: the RPC's API key (in its URL path) is published by /healthz and the logs
# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_the_rpc_api_key_in_its_url_stays_out_of_healthz_and_logs(
    network: Contracts, actors: Actors, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hosted RPCs put the account's API key in the URL path (``https://.../v3/<key>``). When the
    chain cannot be reached, the validator's failing step stores ``f"{type(exc).__name__}: {exc}"``
    as ``health.last_error`` (`Validator._steps`) and logs the same at WARNING: the HTTP client's
    error names the URL with its path, so ``/healthz`` (``lastError``, served to whatever monitors
    it; ``http_host`` may be public) and the log pipeline carry the key. Real parts: the validator
    set up through a plain forwarding JSON-RPC endpoint (tests/rpc_proxy.py) at ``/v3/<key>``, which
    then goes away. Safe: URLs in errors are shown without path and query (or the key redacted)."""
    from rpc_proxy import rpc_proxy
    from supernet.validator.service import Validator

    secret = "APIKEYSECRET0123456789abcdef"
    upstream = network.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    with rpc_proxy(upstream, lambda request, forward: None) as (url, _seen):
        settings = _validator_settings(network, actors.validators[0], tmp_path, http_port=0)
        settings.chain.rpc_url = f"{url}/v3/{secret}"
        v = Validator(settings, scorer=NamesWeights(), store=in_process_client(tmp_path / "vstore"))
        await v.setup()
    try:  # the endpoint is gone: the next step cannot reach the chain
        stepping = asyncio.create_task(v._steps())
        for _ in range(100):
            await asyncio.sleep(0.1)
            if v.health.last_error is not None:
                break
        v.stop()
        await asyncio.wait_for(stepping, 30)
    finally:
        await v.cleanup()
        await v.store.aclose()
    server = v._ops_server()
    assert server is not None
    health = TestClient(server.config.app).get("/healthz").json()
    assert health["lastError"] is not None, "the step failed: the chain is unreachable"
    logged = [r.getMessage() for r in caplog.records if secret in r.getMessage()]
    assert secret not in json.dumps(health) and not logged, (
        f"the RPC's API key is in /healthz: {health['lastError']!r}; in {len(logged)} log line(s)"
    )
