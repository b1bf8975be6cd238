"""The explorer in a real browser, on a real devnet: what a person watching the network sees.

One `supernet devnet demo` run (real Anvil, contracts, embedded store, two honest nodes and one
that cheats with made-up answers, three validators, the real default model, and `supernet
explorer` as one more process) is shared by the module; once the demo has judged the network,
Debian's Chromium driven by Playwright opens the explorer. Screenshots go to a temporary folder,
or to ``$SUPERNET_EXPLORER_SCREENSHOTS`` (``docs/explorer`` to refresh the README's).

The same run is the end-to-end test of `supernet devnet demo` itself
(`test_demo_slashes_the_cheater_and_refunds_its_users`): one demo network serves both, instead of
two identical runs of about two and a half minutes each (tests/integration/test_devnet_demo.py
runs it on its own only where Chromium is missing).
"""

from __future__ import annotations

import io
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from supernet.sdk.chain import Contracts, Deployment
from supernet.sdk.chain.anvil import dev_account, set_balance
from supernet.sdk.devnet.demo import DemoConfig, DemoNetwork, run_demo

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
DEMO_RUN: dict[str, Any] = {}
"""The module's demo run: its console ``output`` and ``keep_dir`` (its processes' logs)."""
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

if not CHROMIUM.exists():  # `make setup` installs it; say so rather than fail obscurely
    pytest.skip("Debian's chromium is not installed (make setup installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoNetwork]:
    """A finished demo network, kept up (Anvil, store, nodes, validators, explorer) for the module."""
    ready: queue.Queue[DemoNetwork] = queue.Queue()
    release = threading.Event()
    out = io.StringIO()

    def hold(net: DemoNetwork) -> None:
        ready.put(net)
        release.wait(600)

    cfg = DemoConfig(
        tasks=6, fault="answer:1.0", keep_dir=tmp_path_factory.mktemp("demo"), hold=hold, explorer_port=0
    )
    DEMO_RUN.update(output=out, keep_dir=cfg.keep_dir)
    console = Console(file=out, width=120, force_terminal=False)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_demo(cfg, console)
        except BaseException as exc:  # reported by the fixture below, with the demo's output
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while True:
            try:
                net = ready.get(timeout=2)
                break
            except queue.Empty:
                assert thread.is_alive(), f"the demo stopped: {failure!r}\n{out.getvalue()[-4000:]}"
        assert net.ok, out.getvalue()[-4000:]
        assert net.explorer_url is not None
        yield net
    finally:
        release.set()
        thread.join(60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("SUPERNET_EXPLORER_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_demo_slashes_the_cheater_and_refunds_its_users(demo: DemoNetwork) -> None:
    """`supernet devnet demo` end to end (tests/integration/test_devnet_demo.py says what it runs)."""
    text = DEMO_RUN["output"].getvalue()
    assert demo.ok, text[-4000:]
    assert "✔ the faulty node was slashed" in text
    assert "✔ no honest node was slashed" in text
    assert "challenge #1" in text and "FRAUD" in text
    # The verdict came from independent checks: more than one validator flagged the receipt itself.
    logs = sorted(DEMO_RUN["keep_dir"].glob("validator-*.log"))
    assert len(logs) == 3
    assert sum("FAULTY" in log.read_text() for log in logs) >= 2


def api(net: DemoNetwork, path: str) -> dict[str, Any]:
    r = httpx.get(f"{net.explorer_url}/api/v1{path}", timeout=10)
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def slashed_node(net: DemoNetwork) -> str:
    nodes = api(net, "/network")["nodes"]
    [node] = [n["address"] for n in nodes if n["slash_count"] > 0]
    return str(node)


def test_network_page_marks_the_slashed_node(demo: DemoNetwork, browser: Any, shots: Path) -> None:
    faulty = slashed_node(demo)
    page = browser.new_page(viewport=LAPTOP)
    page.goto(demo.explorer_url)
    row = page.locator(f'tr[data-node="{faulty}"]')
    sync_api.expect(row.get_by_text("slashed", exact=True)).to_be_visible()
    honest = page.locator("tr[data-node]").filter(has_not_text="slashed")
    assert honest.count() == 2
    assert int(page.locator('[data-total="tasks"]').inner_text()) == 6
    page.screenshot(path=str(shots / "network.png"), full_page=True)
    phone = browser.new_page(viewport=PHONE)
    phone.goto(demo.explorer_url)
    sync_api.expect(phone.get_by_role("searchbox", name="Search by task id")).to_be_visible()
    # Nothing wider than the phone's screen but the scrollable tables.
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1
    phone.screenshot(path=str(shots / "network-phone.png"), full_page=False)


def test_challenge_page_shows_the_fraud_verdict_and_split(
    demo: DemoNetwork, browser: Any, shots: Path
) -> None:
    faulty = slashed_node(demo)
    [challenge] = [c for c in api(demo, f"/address/{faulty}")["challenges"] if c["status"] == "fraud"][:1]
    page = browser.new_page(viewport=LAPTOP)
    page.goto(f"{demo.explorer_url}/challenges/{challenge['challenge_id']}")
    sync_api.expect(page.locator("#verdict")).to_contain_text("FRAUD")
    split = page.get_by_label("Split of the slashed stake")
    for label in ("Slashed from the node", "Challenger reward", "Voter pool", "User refund", "Burned"):
        sync_api.expect(split.get_by_text(label)).to_be_visible()
    assert "ETH" in split.inner_text() or "gwei" in split.inner_text()
    # The evidence's findings come from the validator's replay of the agent.
    sync_api.expect(page.get_by_role("cell", name="replay", exact=True).first).to_be_visible()
    assert page.locator("section[aria-labelledby=votes-h] tbody tr").count() >= 2
    page.screenshot(path=str(shots / "challenge.png"), full_page=True)


def test_an_honest_receipt_verifies(demo: DemoNetwork, browser: Any, shots: Path) -> None:
    faulty = slashed_node(demo)
    honest = next(
        n["address"] for n in api(demo, "/network")["nodes"] if n["address"] != faulty and n["tasks"]
    )
    task_id = api(demo, f"/address/{honest}")["receipts"][0]["request_hash"]
    page = browser.new_page(viewport=LAPTOP)
    page.goto(f"{demo.explorer_url}/tasks/{task_id}")
    sync_api.expect(page.locator("#verify-result")).to_have_text("passed")
    sync_api.expect(page.get_by_text("merkle inclusion")).to_be_visible()
    assert page.locator("#trace-output").inner_text().strip()
    sync_api.expect(page.get_by_text("LLM call").first).to_be_visible()
    page.screenshot(path=str(shots / "task.png"), full_page=True)
    page.get_by_role("link", name="Batch", exact=False).first.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Batch")
    page.screenshot(path=str(shots / "batch.png"), full_page=True)
    page.goto(f"{demo.explorer_url}/address/{faulty}")
    sync_api.expect(page.get_by_text("slashed", exact=True).first).to_be_visible()
    page.screenshot(path=str(shots / "address.png"), full_page=True)


def test_search_finds_a_task_and_explains_a_bad_query(demo: DemoNetwork, browser: Any, shots: Path) -> None:
    task_id = api(demo, "/batches/1")["receipts"][0]["request_hash"]
    page = browser.new_page(viewport=LAPTOP)
    page.goto(demo.explorer_url)
    box = page.get_by_role("searchbox", name="Search by task id")
    box.fill(task_id)
    box.press("Enter")
    page.wait_for_url(f"**/tasks/{task_id}")
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text(task_id)
    page.get_by_role("searchbox", name="Search by task id").fill("not a thing")
    page.get_by_role("button", name="Search").click()
    sync_api.expect(page.get_by_role("alert")).to_contain_text("not a task id")
    page.screenshot(path=str(shots / "search-error.png"))


def test_live_updates_arrive_without_a_reload(demo: DemoNetwork, browser: Any) -> None:
    page = browser.new_page(viewport=LAPTOP)
    page.goto(demo.explorer_url)
    sync_api.expect(page.locator("#live-status")).to_have_text("· live updates on")
    page.evaluate("window.__sameDocument = true")
    validators_before = int(api(demo, "/totals")["indexed_block"])
    # Something new happens on chain: a newcomer stakes as a validator.
    newcomer = dev_account(17)
    c = Contracts.connect(demo.rpc_url, Deployment.load(demo.deployment), newcomer)
    set_balance(c.w3, newcomer.address, 10 * 10**18)
    c.service_manager.register_validator(2 * 10**18)
    line = page.locator("#live-feed li.new", has_text="ValidatorRegistered")
    sync_api.expect(line).to_be_visible(timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True  # the same document: no reload happened
    # the totals refresh on their own live message, which may land a moment after the feed line
    page.wait_for_function(
        "(before) => parseInt(document.querySelector('[data-total=\"indexed_block\"]')"
        ".innerText.replace(/,/g, '')) > before",
        arg=validators_before,
        timeout=20_000,
    )
