"""Review of three hardening commits: the stdio MCP line-cap relay (d6a91a2), the node's cache of
unfunded payment channels (1caed38), and the pinned Unicode table of the ``text`` tool with the
validator's ``calculator`` ulp tolerance (7abaed0).

Tried, on the real parts (the node's `MCPTools` with the real ``mcp`` client and a real
``mcp``-package server over stdio, behind the real relay; the node service on the fakes of
tests/node_fixtures.py; the validator's `check_tools`; another real CPython, 3.12, where the
machine has one):

1. The relay's cap was 4 x ``max_result_bytes`` on the *wire* line, not on what the node keeps. FIXED (was
   FOUND; now ``max_message_bytes``: 4 x ``max_result_bytes``, at least 4 MiB): honest messages the node's
   own rules accept ended the session: a ``tools/list`` within the node's listing bounds (descriptions it
   cuts to 1 KiB anyway), so the whole server is absent until the node restarts; a list result at a third
   of ``max_result_bytes`` (the ``mcp`` server framework sends each item again as a content block: ~12
   wire bytes per kept byte); an image the node keeps only as a digest. The same cap is on the HTTP
   transport's SSE events.
2. The relay ended an over-cap session by SIGKILL of its direct child and exited. FIXED (was FOUND; now it
   kills its whole process group, as its leader): the server's own children (a browser, a worker) outlived
   it: SIGKILL skips the server's cleanup, and the MCP client's kill of the whole process group is skipped
   because its leader (the relay) already exited. A user steering a fetch-like tool to a huge answer leaks
   a process tree per call.
3. The relay is the node's own interpreter started with the server's ``env``. FIXED (was FOUND; now
   started with ``-I``): an operator's ``PYTHONHOME``/``PYTHONPATH`` meant for the server (run by another
   Python here) configured the relay too, and the server never starts; it started before. Its directory
   (the kernel's) is also its ``sys.path[0]``.
4. A command not found, a message up to the cap: hold (fails at once, as before; unit tests).
5. The unfunded-channel cache: aimed at a victim's key (a request naming the victim, signed by the
   attacker), case variants of the address, memory growth. Holds: only a key's own signature reaches the
   cache, one entry per checksummed address, bounded.
6. The ulp window (``tool_check._libm_noise``) applied to every float result, not only libm's. FIXED (was
   FOUND; the window is gone: the calculator's transcendental functions and float powers are mpmath's,
   rounded once, the same double on every platform, compared exactly): a node recorded ``14 / 2`` as
   ``6.999999999999999`` (pure IEEE arithmetic, identical everywhere) and passes; an agent's
   ``int()``/``floor`` of it is 6.
7. The window was on the result, the platform difference in the libm call. FIXED (was FOUND; as 6): an
   expression that amplifies a 1-ulp ``exp`` difference (``exp(0.3) - c``) still frames an honest node on
   another math library.
8. Other pure tools followed the running Python's Unicode database. FIXED (was FOUND; the
   calculator takes ASCII only, the path index is ``[0-9]`` with ``re.ASCII``):
   the ``calculator`` parses identifiers with the interpreter's tables (a Kawi letter, Unicode
   15: "not an arithmetic expression" on 3.11, "not allowed in an expression: Name" on 3.12), and
   ``json_query``'s ``[index]`` is ``\\d`` + ``int()`` (a Kawi digit: "not found" on 3.11, an
   element on 3.12). The ``text`` tool's pinned table answers alike on both (holds).
9. The ``text`` tool's ``lower`` changed in place. FIXED (was FOUND; the final-sigma rule with
   the Cased and Case_Ignorable sets of Unicode 14.0, equal to ``str.lower`` on strings): no final-sigma rule
   (``ΟΔΟΣ`` -> ``οδοσ``, wrong Greek; Python 3.11's ``str.lower``, the tool until 7abaed0, gives
   ``οδος``) with nothing in the tool's spec (the signed profile) telling the semantics apart, so
   nodes and validators of two releases frame each other.
10. text_case.json in the wheel (hatch, ``packages = ["supernet"]``): holds (checked by building
    the wheel with hatchling 1.32.4 outside the repo: supernet/node/kernel/text_case.json and
    mcp_line_cap.py are in it; not a test here, hatchling is not in the venv).

``test_defence_*``: the attack fails today. ``test_known_limit_*``: it succeeds today (docstring:
harm and fix).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mpmath
import pytest
from eth_account import Account
from supernet.node.kernel import builtin_tools, calculator, text_case
from supernet.node.kernel.builtin_tools import _json_query, _text
from supernet.node.kernel.calculator import evaluate
from supernet.node.kernel.errors import ToolError, ToolUnavailableError
from supernet.node.kernel.mcp_tools import (
    MAX_DESCRIPTION_CHARS,
    MESSAGE_BYTES_FLOOR,
    MCPServerConfig,
    MCPTools,
    _errlog,
)
from supernet.node.kernel.tools import ToolRegistry
from supernet.node.service import auth
from supernet.sdk.chain.payments import Channel
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import ToolCall

from tests.node_fixtures import FakeNode, signed_task

pytestmark = pytest.mark.timeout(180)

_ROOT = Path(__file__).resolve().parents[2]
TEST_SERVER = str(_ROOT / "tests" / "mcp_test_server.py")
FEE = 10**12

# An MCP server on the `mcp` package's own framework (what operators run): optional extra tools with
# long descriptions, a list result, an image, and a tool that starts a helper process the server
# stops when it exits (as a browser-driving or worker-pool server does).
SERVER_SOURCE = """
import atexit, os, subprocess, sys
from mcp.server.mcpserver import Image, MCPServer

server = MCPServer("review9")
for i in range(int(os.environ.get("WIDE_TOOLS", "0"))):
    server.tool(name=f"t{i}", description="d" * int(os.environ.get("WIDE_DESC", "0")),
                structured_output=False)(lambda: "ok")

@server.tool(description="n ones.")
def numbers(n: int) -> list[int]:
    return [1] * n

@server.tool(description="A PNG of n bytes.")
def picture(n: int) -> Image:
    return Image(data=b"\\x89PNG" + b"\\0" * n, format="png")

@server.tool(description="Start a helper (stopped when the server exits), answer n bytes.",
             structured_output=False)
def helper(pidfile: str, n: int) -> str:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    atexit.register(proc.kill)
    with open(pidfile, "w") as f:
        f.write(str(proc.pid))
    return "x" * n

if __name__ == "__main__":
    server.run("stdio")
"""


def _server(tmp_path: Path, name: str = "rv", **kw: Any) -> MCPServerConfig:
    script = tmp_path / "review9_server.py"
    if not script.exists():
        script.write_text(SERVER_SOURCE)
    return MCPServerConfig(name, command=sys.executable, args=(str(script),), timeout_s=30.0, **kw)


async def _started(cfg: MCPServerConfig) -> tuple[MCPTools, ToolRegistry]:
    mcp = MCPTools([cfg])
    await mcp.start()
    registry = ToolRegistry()
    mcp.register(registry)
    return mcp, registry


def _compact(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


async def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        await asyncio.sleep(0.05)
    return not _running(pid)


# -- 1. the relay's cap counts wire bytes the node never keeps ----------------------------------------


async def test_defence_the_line_cap_passes_every_message_the_nodes_own_rules_accept(tmp_path: Path) -> None:
    """It was: the relay ended the session at the first stdout line over 4 x ``max_result_bytes``,
    whatever the message, but the node's own rules are on what it keeps, and the wire carries
    more: a ``tools/list`` within the node's listing bounds (40 tools with 8 KB descriptions, cut
    to 1 KiB by the node) left the whole server out until the node restarted; a list result at a
    third of ``max_result_bytes`` (the ``mcp`` framework sends each item again as a content block)
    and an image the node keeps only as a digest were cut. Defence: the cap is the node's memory
    bound, ``max_message_bytes`` (4 x ``max_result_bytes``, at least `MESSAGE_BYTES_FLOOR`), so all
    of them pass with the default settings; a message past it still ends the session."""
    wide = {"WIDE_TOOLS": "40", "WIDE_DESC": "8000"}
    mcp, registry = await _started(_server(tmp_path, env=wide))  # defaults: max_result_bytes 64 KiB
    await mcp.close()
    assert len(registry.names()) == 43  # every tool, each description cut to 1 KiB
    assert len(registry.spec("rv.t0").description) == MAX_DESCRIPTION_CHARS

    cfg = _server(tmp_path)
    mcp, registry = await _started(cfg)
    try:
        small = await registry.call("rv.numbers", {"n": 8000})
        assert _compact(small) < cfg.max_result_bytes // 4
        kept = {"result": [1] * 10_000}  # what the node would keep and record
        assert _compact(kept) < cfg.max_result_bytes // 3
        assert await registry.call("rv.numbers", {"n": 10_000}) == kept
        digest = await registry.call("rv.picture", {"n": 300_000})
        assert digest[0]["type"] == "image" and digest[0]["bytes"] == 300_004
        assert _compact(digest) < 200  # a digest whatever the image's size
        with pytest.raises(ToolUnavailableError, match=r"^MCP server rv is unavailable$"):
            await registry.call("rv.picture", {"n": 2 * MESSAGE_BYTES_FLOOR})  # past the cap
        assert await registry.call("rv.numbers", {"n": 2}) == {"result": [1, 1]}  # (reconnected)
    finally:
        await mcp.close()


# -- 2. the relay's SIGKILL leaves the server's children ----------------------------------------------


async def test_defence_a_session_cut_at_the_cap_takes_the_servers_children_with_it(
    tmp_path: Path,
) -> None:
    """It was: at an over-cap line the relay killed its *direct* child only and exited: SIGKILL
    skips the server's cleanup, and the MCP client kills the process group only while its leader
    (the relay) is alive: the server's children were left running, one tree per over-cap answer
    (a user asking a fetch- or browser-like tool for a huge page leaked a headless browser per
    task). Defence: the relay kills its whole process group (it leads it): the helper goes too,
    as when the session ends normally (control)."""
    cfg = _server(tmp_path)
    mcp, registry = await _started(cfg)
    try:
        assert await registry.call("rv.helper", {"pidfile": str(tmp_path / "a"), "n": 10}) == "x" * 10
    finally:
        await mcp.close()
    normal = int((tmp_path / "a").read_text())
    assert await _gone_within(normal, 5.0)  # control: a normal end stops the helper

    mcp, registry = await _started(cfg)
    leaked = 0
    try:
        with pytest.raises(ToolUnavailableError):
            await registry.call("rv.helper", {"pidfile": str(tmp_path / "b"), "n": 2 * MESSAGE_BYTES_FLOOR})
        await mcp.close()
        leaked = int((tmp_path / "b").read_text())
        assert await _gone_within(leaked, 5.0)  # gone with the session
    finally:
        await mcp.close()
        if leaked and _running(leaked):
            os.kill(leaked, signal.SIGKILL)


# -- 3. the server's environment configures the relay's interpreter -----------------------------------


async def test_defence_the_servers_python_environment_stays_the_servers(tmp_path: Path) -> None:
    """It was: the relay ran as ``sys.executable mcp_line_cap.py ...`` with the server's ``env``:
    every ``PYTHON*`` variable the operator set for the *server* configured the node's own
    interpreter running the relay (a ``PYTHONHOME`` of a server on its own Python: the server
    never started), and the kernel package was its ``sys.path[0]``. Defence: the relay starts
    isolated (``-I``); the server gets the operator's ``env``, and starts as with a direct spawn
    (control)."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    home = tmp_path / "another-python"
    home.mkdir()
    env = {"PYTHONHOME": str(home)}
    cfg = MCPServerConfig("iso", command=sys.executable, args=("-I", TEST_SERVER, "stdio"), env=env)
    params = StdioServerParameters(command=cfg.command or "", args=list(cfg.args), env=dict(cfg.env))
    async with (
        stdio_client(params, errlog=_errlog()) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        direct = [t.name for t in (await session.list_tools()).tools]
    assert "add" in direct  # control: the server itself starts with this env

    mcp, registry = await _started(cfg)
    await mcp.close()
    assert "iso.add" in registry.names()  # behind the relay too


async def test_defence_a_missing_command_fails_at_once_as_before() -> None:
    """Attack/accident: a stdio command that does not exist (a typo, an uninstalled tool) now
    goes through the relay (the relay's ``Popen`` raises, it exits). Defence: the client sees the
    relay's end at once: the node's one wording of an MCP failure, well inside
    ``connect_timeout_s``, as with the direct spawn."""
    cfg = MCPServerConfig("gone", command="no-such-mcp-command-review9", connect_timeout_s=30.0)
    started = time.monotonic()
    mcp, registry = await _started(cfg)
    await mcp.close()
    assert registry.names() == [] and time.monotonic() - started < 10.0
    with pytest.raises(ToolUnavailableError, match=r"^MCP server gone is unavailable$"):
        await mcp.connections["gone"].connect()


# -- 5. the unfunded-channel cache ------------------------------------------------------------------


async def test_defence_the_unfunded_cache_is_reached_only_by_a_keys_own_signature(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attacks on `Authenticator._channel`'s unfunded cache (auth.py:128-154): (a) get an honest
    user refused: send requests naming the victim as ``user`` (signed by the attacker) so that
    the victim's key is remembered as unfunded; (b) read the chain twice per key through case
    variants of one address; (c) grow the node's memory with fresh keys. Defence: the cache is
    reached only after both signatures recover to the named user (a 401 costs no read and
    leaves nothing), it is keyed by the checksummed address, and it holds at most
    `MAX_UNFUNDED_CHANNELS` (fresh keys past it are not remembered); a remembered key is
    refused as it was read (deposit 0), never admitted."""
    calls: list[str] = []
    real = fake_node.chain.channel

    async def counting(user: str) -> Channel:
        calls.append(user)
        return await real(user)

    fake_node.chain.channel = counting  # type: ignore[method-assign]
    assert fake_node.service.ctx is not None
    authn = fake_node.service.ctx.auth
    node, domain, victim = fake_node.address, fake_node.chain.domain, fake_node.user
    attacker = Account.create()
    for nonce in range(3):
        forged = signed_task(attacker, node, domain, "hi", cumulative=FEE, nonce=nonce)
        forged["request"]["user"] = victim.address
        assert (await fake_node.http.post("/v1/tasks", json=forged)).status_code == 401
    assert calls == [] and victim.address not in authn._unfunded
    resp = await fake_node.http.post("/v1/tasks", json=fake_node.body("hi", cumulative=FEE))
    assert resp.status_code == 202, resp.text  # the victim is served at once

    stranger = Account.create()
    first = signed_task(stranger, node, domain, "hi", cumulative=FEE, nonce=0)
    assert (await fake_node.http.post("/v1/tasks", json=first)).status_code == 402
    lower = signed_task(stranger, node, domain, "hi", cumulative=FEE, nonce=1)
    lower["request"]["user"] = stranger.address.lower()  # the same key, another spelling
    assert (await fake_node.http.post("/v1/tasks", json=lower)).status_code == 402
    assert calls.count(stranger.address) == 1 and list(authn._unfunded) == [stranger.address]

    monkeypatch.setattr(auth, "MAX_UNFUNDED_CHANNELS", 3)
    for _ in range(6):
        body = signed_task(Account.create(), node, domain, "hi", cumulative=FEE, nonce=0)
        assert (await fake_node.http.post("/v1/tasks", json=body)).status_code == 402
    assert len(authn._unfunded) == 3  # bounded
    assert _db_count(fake_node) == 1  # only the victim's paid task


def _db_count(node: FakeNode) -> int:
    assert node.service.ctx is not None
    return int(node.service.ctx.db.task_count())


# -- 6-7. the calculator's ulp window -------------------------------------------------------------------


async def test_defence_a_node_cannot_shade_a_float_result() -> None:
    """It was: ``tool_check._libm_noise`` accepted a recorded ``calculator`` float within 4 ulps of
    the re-run for *every* expression, also pure IEEE arithmetic identical on every platform: a
    node recorded ``14 / 2`` as ``6.999999999999999`` (an agent's ``int()`` of it is 6). Defence:
    no window: the calculator is the same double on every platform and results are compared
    exactly; one ulp off is a finding."""
    args = {"expression": "14 / 2"}
    assert evaluate(args["expression"]) == 7.0
    for claimed in (math.nextafter(7.0, 0.0), math.nextafter(7.0, math.inf), 6.99):
        call = ToolCall(0, "calculator", args, claimed, None, True)
        findings, _, _ = await check_tools((call,), RegistryRunner(None))
        assert [f.check.value for f in findings] == ["tool"], claimed
    honest = ToolCall(0, "calculator", args, 7.0, None, True)
    assert await check_tools((honest,), RegistryRunner(None)) == ([], 1, None)


async def test_defence_an_amplified_libm_difference_cannot_frame() -> None:
    """It was: the window was on the *result*, the platforms differ in the *libm call*: an honest
    node whose ``exp`` is 1 ulp off recorded ``(exp(0.3) - 1.3498588075760032) * 1e16`` as
    ``2.22`` where a validator re-ran ``0.0``: framed. Defence: ``exp`` (``log``, ``sin``, float
    powers...) is mpmath's at `calculator.WORKING_BITS`, rounded once: the same double on any
    platform (no platform math library is called), so the expression is the same everywhere."""
    expression = "(exp(0.3) - 1.3498588075760032) * 1e16"
    with mpmath.workprec(400):
        exact = float(mpmath.exp(mpmath.mpf(0.3)))
    assert evaluate("exp(0.3)") == exact  # the correctly rounded double, not the platform's
    result = evaluate(expression)
    assert result == (exact - 1.3498588075760032) * 1e16
    recorded = ToolCall(0, "calculator", {"expression": expression}, result, None, True)
    assert await check_tools((recorded,), RegistryRunner(None)) == ([], 1, None)
    assert "exp" not in {k for k, v in calculator._FUNCTIONS.items() if v is getattr(math, k, None)}


# -- 8. the other pure tools and the interpreter's Unicode ----------------------------------------------


def _other_python() -> str | None:
    """A CPython 3.12+ on this machine (another Unicode database than 3.11's 14.0), if any."""
    found = [shutil.which(f"python3.{minor}") for minor in (12, 13, 14)]
    found += [str(p) for p in sorted(Path("/root/.pyenv/versions").glob("3.1[2-9]*/bin/python3"))]
    for exe in filter(None, found):
        try:
            out = subprocess.run(
                [exe, "-I", "-B", "-c", "import unicodedata; print(unicodedata.unidata_version)"],
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        if out.stdout.strip() not in ("", "14.0.0"):
            return exe
    return None


_ON_OTHER_PYTHON = """
import json, re, sys
sys.path.insert(0, sys.argv[1])
sys.path.append(sys.argv[3])  # mpmath (pure Python) from this venv: the calculator's
case = json.loads(sys.argv[2])
from supernet.node.kernel.calculator import evaluate
from supernet.node.kernel import text_case
import unicodedata
out = {"unicode": unicodedata.unidata_version}
try:
    out["calculator"] = ["result", evaluate(case["expression"])]
except Exception as exc:
    out["calculator"] = ["error", str(exc)]
index, key = re.compile(case["pattern"]).findall(case["path"])[0]
out["json_query"] = json.loads(case["json"])[int(index)] if index else None  # the tool's walk
out["text"] = [[text_case.upper(s), text_case.lower(s), text_case.words(s)] for s in case["texts"]]
print(json.dumps(out))
"""


class _OtherPythonRunner(RegistryRunner):
    """A validator whose built-ins ran on the other Python (answers computed there, worded as
    `ToolRegistry.call` words a tool's failure)."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        super().__init__(None)
        self.answers = answers

    async def run(self, name: str, args: Any) -> Any:
        kind, value = self.answers[name]
        if kind == "error":
            raise ToolError(f"tool {name} failed: {value}")
        return value


async def test_defence_calculator_and_json_query_answer_alike_on_any_python() -> None:
    """It was: two pure tools (re-run by every validator, compared exactly, errors included) read
    the running interpreter's Unicode database: the ``calculator`` parsed with ``ast.parse``
    (``"\U00011f04 + 1"``, KAWI LETTER A of Unicode 15: "not an arithmetic expression" on 3.11,
    "not allowed in an expression: Name" on 3.12), and ``json_query``'s path index was ``\\d`` and
    ``int()`` (``[𑽑]``, KAWI DIGIT ONE: "path not found" on 3.11, element 1 on 3.12): a user
    framed an honest node on one Python before validators on another. Defence: the calculator
    takes ASCII only (refused in its own words), the path index is ``[0-9]`` with ``re.ASCII``:
    the same answers on both Pythons (checked on a real CPython 3.12+ where the machine has one),
    as the pinned ``text`` table's."""
    kawi_letter, kawi_one = "\U00011f04", "\U00011f51"
    expression, path, doc = f"{kawi_letter} + 1", f"[{kawi_one}]", "[10, 20, 30]"
    texts = ["straße ǆ ﬁ İ", "ΟΔΟΣ", "a\u180eb\u3000c \u2028d", "\u1c8a", "e\u0301"]
    # this node, on 3.11 (Unicode 14.0): both are refused
    registry = ToolRegistry()
    for tool in builtin_tools.builtin_tools(None, None):
        registry.register(tool)
    with pytest.raises(ToolError) as calc_error:
        await registry.call("calculator", {"expression": expression})
    with pytest.raises(ToolError) as path_error:
        await registry.call("json_query", {"json": doc, "path": path})
    assert str(calc_error.value) == "tool calculator failed: an expression holds ASCII characters only"
    assert str(path_error.value) == f"path {path!r} not found"
    with pytest.raises(ToolError):  # an Arabic-Indic 2 is no index: ASCII digits only
        _json_query({"json": doc, "path": "[\u0662]"})

    other = await asyncio.to_thread(_other_python)
    if other is None:
        pytest.skip("no CPython 3.12+ on this machine to re-run the tools on")
    case = {"expression": expression, "pattern": builtin_tools._PATH_PART.pattern, "path": path,
            "json": doc, "texts": texts}  # fmt: skip
    mpmath_dir = str(Path(mpmath.__file__).parents[1])
    command = [other, "-I", "-B", "-c", _ON_OTHER_PYTHON, str(_ROOT / "node"), json.dumps(case), mpmath_dir]
    run = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=True
    )
    there = json.loads(run.stdout)
    assert there["unicode"] != "14.0.0"
    assert there["calculator"] == ["error", "an expression holds ASCII characters only"]
    assert there["json_query"] is None  # no index: the path is a key, as here
    # the validator on that Python re-runs the honest node's records: nothing to find
    calc = ToolCall(0, "calculator", {"expression": expression}, None,
                    f"ToolError: {calc_error.value}", True)  # fmt: skip
    runner = _OtherPythonRunner({"calculator": there["calculator"]})
    assert await check_tools((calc,), runner) == ([], 1, None)
    # control: the pinned text table is the same there
    here = [[text_case.upper(s), text_case.lower(s), text_case.words(s)] for s in texts]
    assert there["text"] == here


# -- 9. lower() changed in place ------------------------------------------------------------------------


async def test_defence_lower_keeps_the_final_sigma_of_the_previous_release() -> None:
    """It was: `text_case.lower` mapped one code point at a time, so a word-final capital sigma
    became ``σ`` (``ΟΔΟΣ`` -> ``οδοσ``, wrong Greek) where Python 3.11's ``str.lower``, the tool
    before 7abaed0, gives ``οδος``; with nothing in the tool's spec telling the two apart, nodes
    and validators of two releases flagged each other. Defence: the final-sigma rule as Python
    3.11 applies it, with the Cased and Case_Ignorable sets of Unicode 14.0 pinned beside the
    mappings; the tool equals the previous release on strings (tests/unit/test_review_mcp_tools.py
    checks 50,000 random ones), so a trace of the previous release passes."""
    old = "ΟΔΟΣ ΚΑΙ ΝΟΜΟΣ".lower()  # the tool's answer before 7abaed0 (Python 3.11)
    assert old == "οδος και νομος"
    assert _text({"text": "ΟΔΟΣ ΚΑΙ ΝΟΜΟΣ", "op": "lower"}) == old
    args = {"text": "ΟΔΟΣ ΚΑΙ ΝΟΜΟΣ", "op": "lower"}
    previous_release = ToolCall(0, "text", args, old, None, True)
    assert await check_tools((previous_release,), RegistryRunner(None)) == ([], 1, None)
