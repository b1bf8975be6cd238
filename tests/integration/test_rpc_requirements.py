"""A party's chain RPC is measured before it starts (`supernet.sdk.chain.rpc_checks`).

A validator re-reads recorded ``chain_read`` calls over its RPC. An RPC that lowers a call's gas
(geth's ``--rpc.gascap``) would make an honest read "run out of gas" there, and the validator would
accuse the node that recorded it (and lose its challenge bond); an RPC without the states of the
validator's span could never judge a read. Both are refused at start, in words that say what to fix.

Real Anvil throughout. Anvil has no setting that lowers a call's gas, so that one fault is caused by
`GasCappingProxy`, a fake of geth's cap (a JSON-RPC proxy in front of the real Anvil that lowers the
``gas`` of every ``eth_call`` as geth does, silently); an RPC holding recent states only is a real
Anvil started with ``--prune-history``.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from supernet.node.kernel.chain_read import CHAIN_READ_GAS, MAX_PIN_AGE_S
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account, mine
from supernet.sdk.chain.rpc_checks import (
    RpcRequirementError,
    call_gas_shortfall,
    oldest_block_within,
    require_rpc,
    state_span_shortfall,
)
from web3 import Web3

CAP = 5_000_000


class GasCappingProxy:
    """A fake of geth's ``--rpc.gascap``: forwards JSON-RPC to ``upstream``, every ``eth_call``'s
    gas lowered to ``cap`` without a word (what geth does)."""

    def __init__(self, upstream: str, cap: int) -> None:
        def capped(request: dict[str, Any]) -> dict[str, Any]:
            if request.get("method") == "eth_call" and request.get("params"):
                call = dict(request["params"][0])
                call["gas"] = hex(min(int(str(call.get("gas", hex(cap))), 16), cap))
                return {**request, "params": [call, *request["params"][1:]]}
            return request

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = [capped(r) for r in body] if isinstance(body, list) else capped(body)
                forwarded = urllib.request.Request(
                    upstream, json.dumps(body).encode(), {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(forwarded, timeout=30) as answer:
                    data = answer.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def capped(anvil: Anvil) -> Iterator[GasCappingProxy]:
    proxy = GasCappingProxy(anvil.url, CAP)
    try:
        yield proxy
    finally:
        proxy.close()


def test_an_archive_rpc_that_runs_the_protocols_gas_is_accepted(anvil: Anvil) -> None:
    w3 = anvil.web3()
    assert call_gas_shortfall(w3, CHAIN_READ_GAS) is None
    require_rpc(w3, "validator", call_gas=CHAIN_READ_GAS, state_span_s=MAX_PIN_AGE_S + 86_400)


def test_a_capped_call_gas_is_measured_not_taken_from_the_rpcs_word(capped: GasCappingProxy) -> None:
    w3 = Web3(Web3.HTTPProvider(capped.url))
    shortfall = call_gas_shortfall(w3, CHAIN_READ_GAS)
    assert shortfall is not None and "--rpc.gascap" in shortfall
    assert f"run with about {CAP}" in shortfall  # the probe saw the cap itself
    assert call_gas_shortfall(w3, CAP) is None  # what the cap allows is allowed
    with pytest.raises(RpcRequirementError, match="cannot serve this validator"):
        require_rpc(w3, "validator", call_gas=CHAIN_READ_GAS)


def test_an_rpc_that_prunes_old_states_is_refused_for_the_validators_span() -> None:
    with Anvil(extra_args=["--prune-history", "4"]) as pruned:
        w3 = pruned.web3()
        mine(w3, 12)
        assert oldest_block_within(w3, MAX_PIN_AGE_S) == 0  # a young chain: every block is in the span
        shortfall = state_span_shortfall(w3, MAX_PIN_AGE_S)
        assert shortfall is not None and "no state at block 0" in shortfall
        assert state_span_shortfall(w3, 0) is None  # the head's own state is held
        with pytest.raises(RpcRequirementError, match="keeps older states"):
            require_rpc(w3, "validator", call_gas=CHAIN_READ_GAS, state_span_s=MAX_PIN_AGE_S)


def test_the_oldest_block_of_a_span_follows_block_timestamps() -> None:
    with Anvil() as chain:
        w3 = chain.web3()
        for _ in range(6):  # blocks 1..6, 100 s apart
            w3.provider.make_request("evm_increaseTime", [100])  # type: ignore[arg-type]
            mine(w3, 1)
        head = w3.eth.get_block("latest")
        times = [int(w3.eth.get_block(n)["timestamp"]) for n in range(int(head["number"]) + 1)]
        for span in (0, 50, 100, 250, 599, 10_000):
            expected = max((n for n, t in enumerate(times) if t <= times[-1] - span), default=0)
            assert oldest_block_within(w3, span) == expected, span


async def test_a_validator_on_a_capped_rpc_refuses_to_start_before_it_registers(
    deployed: Contracts, capped: GasCappingProxy, tmp_path: Path
) -> None:
    from supernet.validator.config import ValidatorSettings
    from supernet.validator.service import Validator

    account = dev_account(17)
    settings = ValidatorSettings(
        chain={
            "rpc_url": capped.url,
            "deployment": str(deployed.deployment.save(tmp_path / "deployment.json")),
            "key": "0x" + bytes(account.key).hex(),
        },
        store_url="http://127.0.0.1:9",  # never reached: the RPC is refused first
        db_path=tmp_path / "validator.sqlite",
        register_stake_wei=10**18,
    )
    validator = Validator(settings)
    with pytest.raises(RpcRequirementError, match=r"rpc\.gascap"):
        await validator.setup()
    assert not deployed.service_manager.is_active_validator(account.address)
    assert not (tmp_path / "validator.sqlite").exists()  # nothing opened either
