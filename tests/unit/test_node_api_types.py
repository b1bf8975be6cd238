"""The node's API answers, typed once (`supernet.sdk.node_api`) for the node and the client.

A node's answer is input like any other: a malformed one is a `ClientError` naming the field, not
a ``KeyError`` deep in the client; the node's routes and the client parse the very same classes,
so a renamed field fails here, not at a user's; and the client checks a task input against the
agent card the node publishes with the node's own function, before anything is signed.
"""

from __future__ import annotations

import pytest
from supernet.node.service import routes_tasks, schemas
from supernet.node.service.api import create_app
from supernet.sdk import node_api
from supernet.sdk.agents.input_schema import input_problem
from supernet.sdk.client.types import ClientError, check_input, parse, pick_model_id
from supernet.sdk.models import COMPUTE_PRECISIONS, served_model_id
from supernet.sdk.node_api import AgentCard, NodeInfo, ReceiptPublic, TaskPublic

ADDR = "0x" + "ab" * 20
WEIGHTS = "0x" + "44" * 32
M1, M2 = served_model_id(WEIGHTS, "float32"), served_model_id(WEIGHTS, "bfloat16")
FORMATS = {M1: {"weights": WEIGHTS, "compute": "float32"}, M2: {"weights": WEIGHTS, "compute": "bfloat16"}}


def node_json(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "address": ADDR,
        "chainId": 31337,
        "verifyingContract": "0x" + "cd" * 20,
        "taskFee": "1000000000000000",  # uint256 travel as decimal strings
        "models": [M1, M2],
        "modelNames": {"smollm2-135m": M1, "smollm2-135m-bf16": M2},
        "modelFormats": FORMATS,
        "agents": {"chat": "0x" + "33" * 32},
        "agentCards": [
            {
                "id": "chat",
                "codeHash": "0x" + "33" * 32,
                "inputSchema": {"type": "object", "required": ["messages"]},
            }
        ],
        "storeUrl": None,
        "aFieldOfANewerNode": 1,  # answers tolerate what this version does not know
    }
    doc.update(changes)
    return doc


def test_node_info_is_parsed_with_integers_back_and_unknown_fields_tolerated() -> None:
    info = parse(NodeInfo, node_json(), "GET /v1/node")
    assert info.taskFee == 10**15 and isinstance(info.taskFee, int)
    assert pick_model_id(info, "smollm2-135m-bf16", COMPUTE_PRECISIONS) == M2
    assert pick_model_id(info, None) == M1
    with pytest.raises(ClientError, match="does not serve model 'other'"):
        pick_model_id(info, "other")


def test_a_bfloat16_id_is_signed_only_when_the_caller_accepts_bfloat16() -> None:
    """A bf16 id is judged within the bf16 pair's wide bounds, inside which a node chooses among
    near-tied answers (docs/security-parameters.md): by default the client signs another format,
    and a node listing its bf16 id first does not make the client sign it."""
    info = parse(NodeInfo, node_json(models=[M2, M1]), "GET /v1/node")
    assert pick_model_id(info, None) == M1  # the first listed id the client signs for
    assert pick_model_id(info, None, COMPUTE_PRECISIONS) == M2
    for named in ("smollm2-135m-bf16", M2, M2.upper().replace("0X", "0x")):
        with pytest.raises(ClientError, match=r"computed in bfloat16, which this client does not sign for"):
            pick_model_id(info, named)
    only_bf16 = parse(NodeInfo, node_json(models=[M2]), "GET /v1/node")
    with pytest.raises(ClientError, match=r"serves no model this client signs for: .*'bfloat16'"):
        pick_model_id(only_bf16, None)
    assert pick_model_id(only_bf16, None, ("bfloat16",)) == M2


@pytest.mark.parametrize(
    ("formats", "problem"),
    [
        ({}, "does not state what model"),  # an older node, or one hiding its format
        ({M1: FORMATS[M1]}, "does not state what model"),  # a format for another id only
        ({M2: {"weights": WEIGHTS, "compute": "float32"}}, "the id is not the hash of that"),
        ({M2: {"weights": "0x" + "55" * 32, "compute": "bfloat16"}}, "the id is not the hash of that"),
        ({M2: {"weights": WEIGHTS, "compute": "float64"}}, "the id is not the hash of that"),
        ({M2: {"weights": "0x" + "55" * 31, "compute": "float32"}}, "malformed answer"),
    ],
)
def test_attack_a_bfloat16_id_stated_as_another_format_is_refused(
    formats: dict[str, object], problem: str
) -> None:
    """A node serving a bf16 id cannot have it signed by stating another format (or none): the
    client signs an id only in the format the id is the hash of."""
    with pytest.raises(ClientError, match=problem):
        info = parse(NodeInfo, node_json(models=[M2], modelFormats=formats), "GET /v1/node")
        pick_model_id(info, None, ("float32",))


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"address": "not-an-address"}, "address"),
        ({"taskFee": "-1"}, "taskFee"),
        ({"taskFee": str(2**256)}, "taskFee"),
        ({"models": "0x11"}, "models"),
        ({"agentCards": [{"id": "chat"}]}, "agentCards.0.codeHash"),
    ],
)
def test_a_malformed_answer_is_a_client_error_naming_the_field(
    changes: dict[str, object], where: str
) -> None:
    with pytest.raises(ClientError, match=rf"GET /v1/node: malformed answer .*first at {where}:"):
        parse(NodeInfo, node_json(**changes), "GET /v1/node")


def test_task_and_receipt_round_trip_through_the_nodes_own_serialisation() -> None:
    """What the node sends (its response_model's JSON) is what the client parses back."""
    task = TaskPublic(
        id=M1, status="done", user=ADDR, agent="chat", modelId=M2, nonce=7, fee=2**200,
        output="hi", traceCid="bafy", createdAt=1.0, updatedAt=2.0,
    )  # fmt: skip
    wire = task.model_dump_json()
    assert '"fee":"' + str(2**200) + '"' in wire  # uint256 as a decimal string on the wire
    assert parse(TaskPublic, __import__("json").loads(wire), "task") == task
    trace = "bafyreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe"  # a real CID: it is typed
    receipt = {"taskId": M1, "node": ADDR, "receipt": {"fee": "5"}, "leaf": M2,
               "signature": "0x" + "00" * 65, "traceCid": trace, "batch": None}  # fmt: skip
    assert parse(ReceiptPublic, receipt, "receipt").batch is None
    with pytest.raises(ClientError, match="first at traceCid"):
        parse(ReceiptPublic, {**receipt, "traceCid": "bafy"}, "receipt")
    with pytest.raises(ClientError, match="first at status"):
        parse(TaskPublic, {**task.model_dump(mode="json"), "status": "exploded"}, "task")


def test_the_node_serves_the_sdks_classes() -> None:
    """One definition: the node's routes declare the SDK's classes as their answers."""
    for name in (
        "NodeInfo",
        "TaskPublic",
        "ReceiptPublic",
        "AccountPublic",
        "AuditEntryPublic",
        "SignedTask",
    ):
        assert getattr(schemas, name) is getattr(node_api, name)
    assert {getattr(r, "path", ""): getattr(r, "response_model", None) for r in create_app().routes}[
        "/v1/node"
    ] is NodeInfo
    tasks = {(r.path, *sorted(r.methods)): r.response_model for r in routes_tasks.router.routes}  # type: ignore[attr-defined]
    assert tasks["/v1/tasks/{task_id}", "GET"] is TaskPublic
    assert tasks["/v1/tasks", "POST"] is TaskPublic
    assert tasks["/v1/tasks/{task_id}/receipt", "GET"] is ReceiptPublic


def test_the_client_checks_inputs_against_the_agent_card_before_signing() -> None:
    info = parse(NodeInfo, node_json(), "node")
    check_input(info, "chat", {"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ClientError, match=r"agent 'chat'.s input schema at \(the input\): 'messages' is a"):
        check_input(info, "chat", {"prompt": "hi"})
    check_input(info, "unknown-agent", {"prompt": "hi"})  # no card: the node decides (and refuses)
    # a card whose schema is no schema cannot stop the user: the node's admission check decides
    broken = info.model_copy(
        update={"agentCards": [AgentCard(id="chat", codeHash=M1, inputSchema={"type": 5})]}
    )
    check_input(broken, "chat", {"prompt": "hi"})


def test_input_problem_is_the_nodes_rule() -> None:
    schema = {"type": "object", "properties": {"k": {"type": "integer", "maximum": 3}}}
    assert input_problem(schema, {"k": 2}) is None
    assert input_problem(schema, {"k": 9}) == "at k: 9 is greater than the maximum of 3"
    assert input_problem({}, ["anything", 1]) is None
