"""Hostile input, generated: schemathesis over the OpenAPI a real node publishes, and over the
embedded store's.

The node is ``supernet node run`` on a real Anvil (real kernel, default model, embedded store);
the store is ``supernet.sdk.store.embedded`` on disk. Schemathesis draws requests from each
published schema (valid and invalid ones) and checks every response: no server error, a status
code, content type and body the schema documents. Authenticated requests are generated apart:
hostile task inputs signed for real (EIP-712 request and voucher of a funded user), so they reach
admission, the database and the worker, each answer validated against the same schema.

Cases per operation and generation mode (valid, invalid): ``SUPERNET_FUZZ_CASES`` (a short run in
``make test``; ``make fuzz-api`` runs 100, over 1,000 in all, and prints the count). Schemathesis's
pytest plugin does not load under pytest 9, so the operations are driven from its strategies here.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from node_fixtures import NodeProcess, node_on_anvil
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance
from supernet.sdk.chain.anvil import dev_account
from supernet.sdk.chain.eip712 import Domain, TaskRequest, Voucher, sign_task_request, sign_voucher
from supernet.sdk.chain.receipts import input_hash
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.store.embedded import serve_in_thread

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

CASES = int(os.environ.get("SUPERNET_FUZZ_CASES", "12"))
NODE_KEY_INDEX, USER_INDEX = 15, 16  # dev accounts no other suite uses
DEPOSIT = 10**18
COUNTS: dict[str, int] = {"node": 0, "store": 0, "signed": 0}


@dataclass
class FuzzNet:
    node: NodeProcess
    domain: Domain
    user: LocalAccount
    model_id: str
    agent_hash: str
    store_url: str


@pytest.fixture(scope="module")
def fuzz_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzNet]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with node_on_anvil(tmp, NODE_KEY_INDEX) as (_, contracts, _, node):
        store_url, stop_store = serve_in_thread(tmp / "store")
        try:
            user = dev_account(USER_INDEX)
            node_address = dev_account(NODE_KEY_INDEX).address
            contracts.as_account(user).payments.deposit(node_address, DEPOSIT)
            info = httpx.get(node.url + "/v1/node", timeout=30).json()
            model_id, agent_hash = info["models"][0], info["agents"]["chat"]
            yield FuzzNet(node, contracts.domain, user, model_id, agent_hash, store_url)
        finally:
            stop_store()
        print(f"\nfuzz cases: {COUNTS}")


_nonces = itertools.count(int(time.time()))


def _sign(net: FuzzNet, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (an ``input``, perhaps more) as a task signed for real by the funded user."""
    node = dev_account(NODE_KEY_INDEX).address
    try:
        digest = input_hash(body["input"])
    except (TypeError, ValueError):  # no canonical form: the node must refuse it, signed or not
        return body
    req = TaskRequest(
        user=net.user.address,
        node=node,
        model_id=bytes.fromhex(net.model_id[2:]),
        agent_hash=bytes.fromhex(net.agent_hash[2:]),
        input_hash=digest,
        max_fee=10**16,
        nonce=next(_nonces),
        deadline=int(time.time()) + 600,
    )
    # the node admits a voucher of exactly billed + fee (a larger one would never be redeemed)
    grant = ReadGrantAuth(net.user, node, net.domain)  # an account is readable by its user only
    account = httpx.get(f"{net.node.url}/v1/accounts/{net.user.address}", timeout=30, auth=grant).json()
    cumulative = int(account["billed"]) + req.max_fee
    voucher = Voucher(user=net.user.address, node=node, cumulative_amount=cumulative)
    COUNTS["signed"] += 1
    return {
        **body,
        "agent": "chat",
        "request": {
            "user": req.user,
            "node": req.node,
            "modelId": net.model_id,
            "agentHash": net.agent_hash,
            "inputHash": "0x" + digest.hex(),
            "maxFee": str(req.max_fee),
            "nonce": str(req.nonce),
            "deadline": str(req.deadline),
        },
        "signature": "0x" + sign_task_request(req, net.domain, net.user).hex(),
        "voucher": {
            "cumulativeAmount": str(cumulative),
            "signature": "0x" + sign_voucher(voucher, net.domain, net.user).hex(),
        },
    }


# A request the schema forbids must be refused: any 4xx the API documents counts, 413 (too large)
# and 402 (payment) included, which schemathesis's default list leaves out.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "402",
                    "403",
                    "404",
                    "405",
                    "409",
                    "413",
                    "415",
                    "422",
                    "429",
                ]
            }
        }
    }
)


def load(url: str) -> Any:
    """The OpenAPI schema served at ``url``, with this module's check settings."""
    return schemathesis.openapi.from_url(url, config=CONFIG)


def fuzz(schema: Any) -> tuple[int, list[str]]:
    """Every operation of ``schema``, ``CASES`` valid and ``CASES`` invalid requests each (schemathesis
    strategies under hypothesis), each response checked by schemathesis' checks: no server error,
    status code, content type, headers and body as documented, schema-invalid requests refused.
    Left out: ``positive_data_acceptance`` (a schema-valid request must succeed), because a paid
    request is refused on what no schema can say (signature, node, nonce, funds: 400/401/402/409,
    each documented). Returns the number of cases and one line per failing operation."""
    count, failures = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=CASES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                nonlocal count
                count += 1
                case.call_and_validate(timeout=60, excluded_checks=[positive_data_acceptance])

            try:
                check()
            except Unsatisfiable:  # nothing to get wrong: an operation without parameters or body
                continue
            except (Exception, BaseExceptionGroup) as exc:  # the falsifying example is in the message
                failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {str(exc)[:3000]}")
    return count, failures


def test_the_node_api_has_no_server_error_and_keeps_its_schema(fuzz_net: FuzzNet) -> None:
    schema = load(fuzz_net.node.url + "/openapi.json")
    COUNTS["node"], failures = fuzz(schema)
    assert not failures, "\n".join(failures)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def test_signed_tasks_with_hostile_inputs_are_answered_as_documented(fuzz_net: FuzzNet) -> None:
    """Authenticated requests: generated inputs (any JSON: huge integers, NaN, lone surrogates,
    deep nesting) signed for real by a funded user. Each answer is a documented status with a
    documented body (schemathesis validates it against the node's own schema); what the node
    cannot encode canonically is refused before it is signed for, the rest is accepted."""
    schema = load(fuzz_net.node.url + "/openapi.json")
    operation = schema.find_operation_by_label("POST /v1/tasks")
    assert operation is not None
    statuses: dict[int, int] = {}

    @settings(max_examples=4 * CASES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(task_input=st.text() | st.dictionaries(st.text(max_size=8), JSON, max_size=4))
    def check(task_input: Any) -> None:
        body = {"input": task_input}
        try:
            body = _sign(fuzz_net, body)
            raw = json.dumps(body).encode()
        except (TypeError, ValueError):  # JSON itself cannot carry it (NaN is refused by our encoder)
            raw = json.dumps({**body, "input": repr(task_input)}).encode()
        response = httpx.post(
            fuzz_net.node.url + "/v1/tasks",
            content=raw,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.text
        operation.validate_response(response)

    check()
    COUNTS["signed"] = sum(statuses.values())
    assert statuses.get(202, 0) > 0, f"no signed task was accepted: {statuses}"


def test_the_store_api_has_no_server_error_and_keeps_its_schema(fuzz_net: FuzzNet) -> None:
    schema = load(fuzz_net.store_url + "/openapi.json")
    COUNTS["store"], failures = fuzz(schema)
    assert not failures, "\n".join(failures)
    Path(os.environ.get("SUPERNET_FUZZ_REPORT", "/dev/null")).write_text(json.dumps(COUNTS))
