"""The wire formats (`supernet.sdk.formats`): golden encodings, exact round trips, strict reading.

The golden CIDs pin each format's encoding: a change to a field name, order-independent content or
a type shows up here first (and must come with a new format version). Round trips are exact in
both directions, and reading refuses what the format does not define, naming the field: there is
one way to write each document.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_utils import to_checksum_address
from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.formats import evidence, manifest, trace
from supernet.sdk.formats.evidence import Evidence, EvidenceFinding, plain
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.manifest import BatchManifest
from supernet.sdk.formats.trace import Trace, VerifiedWitness, Witness, event_from_dag, witness_reads
from supernet.sdk.store.cids import compute_cid, encode_dag, link
from supernet.sdk.store.files import file_cid

GOLDEN = {
    trace: "bafyreigxsqmvx7xfbijjdb3lbqcppkrjjqlj5npugrwoky7l65n6bh7nwm",
    manifest: "bafyreiaaqb7lpfacm5qgemtkgwc276lejmzp6wlq4segqstna4v3groapi",
    evidence: "bafyreie4i7mwdwhcto443yeqfi3t5aucl4nrgy4ubvubfo6a23ugpckyna",
}
READERS: dict[Any, Any] = {
    trace: Trace.from_dag,
    manifest: BatchManifest.from_dag,
    evidence: Evidence.from_dag,
}


@pytest.mark.parametrize("fmt", list(GOLDEN), ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_golden_encoding_and_exact_round_trip(fmt: Any) -> None:
    doc = fmt.example_dag()
    assert compute_cid(encode_dag(doc), "dag-cbor") == GOLDEN[fmt]
    typed = READERS[fmt](doc)
    assert typed.to_dag() == doc and READERS[fmt](typed.to_dag()) == typed
    assert encode_dag(typed.to_dag()) == encode_dag(doc)


@pytest.mark.parametrize("fmt", list(GOLDEN), ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_reading_is_strict_and_names_the_field(fmt: Any) -> None:
    read, doc = READERS[fmt], fmt.example_dag()
    with pytest.raises(FormatError, match="extra is not a field"):
        read({**doc, "extra": 1})
    first = next(iter(k for k in doc if k != "type"))
    with pytest.raises(FormatError, match=f"{first} is missing"):
        read({k: v for k, v in doc.items() if k != first})
    with pytest.raises(FormatError):
        read({**doc, "type": "supernet/other/v9"})
    with pytest.raises(FormatError, match="must be an object"):
        read([doc])


EVENTS = [
    {
        "kind": "tool",
        "name": "calculator",
        "args": {"expression": "6 * 7"},
        "deterministic": True,
        "result": 42,
        "error": None,
    },
    {"kind": "memory.add", "namespace": "ns", "entry": "E", "root": "R1", "prev_root": None},
    {
        "kind": "memory.search",
        "namespace": "ns",
        "query": "q",
        "k": 2,
        "root": "R1",
        "hits": ["E"],
        "scores": [0.5],
    },
    {
        "kind": "storage.put",
        "namespace": "ns",
        "path": "a.txt",
        "cid": "F",
        "root": "R2",
        "prev_root": None,
        "version": 1,
    },
    {"kind": "storage.get", "namespace": "ns", "path": "a.txt", "cid": "F", "root": "R2"},
    {"kind": "storage.list", "namespace": "ns", "root": None},
    {"kind": "error", "syscall": "tool", "error": "AccessDeniedError: no", "call": {"name": "x"}},
]


def _with_links(ev: dict[str, Any], cids: dict[str, Any]) -> dict[str, Any]:
    def swap(v: Any) -> Any:
        if isinstance(v, list):
            return [swap(x) for x in v]
        return cids.get(v, v) if isinstance(v, str) else v

    return {k: (swap(v) if k in ("entry", "root", "prev_root", "hits", "cid") else v) for k, v in ev.items()}


def test_every_event_kind_round_trips_and_names_what_the_replay_reads() -> None:
    entry = encode_dag({"type": "supernet/memory-entry", "text": "t", "metadata": {}})
    root1, root2 = encode_dag({"entries": [1]}), encode_dag({"files": {}})
    cids = {
        "E": link(compute_cid(entry, "dag-cbor")),
        "R1": link(compute_cid(root1, "dag-cbor")),
        "R2": link(compute_cid(root2, "dag-cbor")),
        "F": link(file_cid(b"file")),
    }
    events = [_with_links(e, cids) for e in EVENTS]
    for raw in events:
        typed = event_from_dag(raw)
        assert typed.to_dag() == raw and event_from_dag(typed.to_dag()) == typed
    doc = {**trace.example_dag(), "events": events}
    parsed = Trace.from_dag(doc)
    assert parsed.to_dag() == doc
    reads = witness_reads(parsed.events)
    assert reads == [
        ("block", str(cids["E"])),
        ("block", str(cids["R1"])),
        ("file", str(cids["F"])),
        ("block", str(cids["R2"])),
    ]
    witness = VerifiedWitness(Witness((entry, root1, root2), (b"file",)))
    assert witness.block(str(cids["E"]))["text"] == "t" and witness.file(str(cids["F"])) == b"file"
    with pytest.raises(KeyError):
        witness.file(file_cid(b"other"))
    with pytest.raises(FormatError, match=r"witness.blocks\[0\] is not dag-cbor"):
        VerifiedWitness(Witness((b"\xff",), ()))


def test_events_refuse_unknown_kinds_extra_fields_and_bad_values() -> None:
    tool = EVENTS[0]
    with pytest.raises(FormatError, match="kind 'shell'"):
        event_from_dag({**tool, "kind": "shell"})
    with pytest.raises(FormatError, match=r"event\.arguments is not a field"):
        event_from_dag({**tool, "arguments": {}})  # no alternate names
    with pytest.raises(FormatError, match=r"event\.deterministic must be true or false"):
        event_from_dag({**tool, "deterministic": 1})
    with pytest.raises(FormatError, match=r"event\.result"):
        event_from_dag({**tool, "result": 2**64})  # dag-cbor holds 64-bit integers
    with pytest.raises(FormatError, match=r"event\.result"):
        event_from_dag({**tool, "result": float("nan")})
    with pytest.raises(FormatError, match=r"event\.entry is not a CID"):
        event_from_dag({**EVENTS[1], "entry": "not-a-cid", "root": "x"})
    llm = trace.example_dag()["events"][0]
    with pytest.raises(FormatError, match=r"event.output_ids\[0\]"):
        event_from_dag({**llm, "output_ids": [-1]})
    with pytest.raises(FormatError, match=r"event.logprobs\[0\] must be finite"):
        event_from_dag({**llm, "logprobs": [float("inf")]})


def test_trace_fields_are_checked() -> None:
    doc = trace.example_dag()
    for key, value, match in (
        ("status", "done", "status must be one of"),
        ("seed", -1, "seed must be in"),
        ("limits", {**doc["limits"], "memory": "yes"}, "limits.memory"),
        ("tools", [_tool("a"), _tool("a")], "tools lists a tool twice"),
        ("witness", {"blocks": ["x"], "files": []}, r"witness.blocks\[0\] must be a byte string"),
        ("request", {"user": "0x"}, "request:"),
        ("events", [{"kind": "llm"}], r"events\[0\].index is missing"),
    ):
        with pytest.raises(FormatError, match=match):
            Trace.from_dag({**doc, key: value})
    assert Trace.from_dag({**doc, "tools": [_tool("a")]}).tools[0].name == "a"


def _tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": "d", "parameters": {}, "deterministic": True, "irreversible": False}


def test_the_signed_request_has_one_json_form() -> None:
    user, node = to_checksum_address("0x" + "ab" * 20), to_checksum_address("0x" + "cd" * 20)
    req = TaskRequest(user, node, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 7, 8, 9)
    as_json = req.to_json()
    assert TaskRequest.from_json(as_json) == req and as_json["maxFee"] == "7"
    for bad in (
        {**as_json, "extra": "1"},
        {**as_json, "modelId": "0x01"},
        {**as_json, "nonce": "-1"},
        {**as_json, "deadline": "1e3"},
        {k: v for k, v in as_json.items() if k != "user"},
    ):
        with pytest.raises(ValueError):
            TaskRequest.from_json(bad)
    doc = {**trace.example_dag(), "request": as_json, "request_signature": "0x" + "11" * 65}
    parsed = Trace.from_dag(doc)
    assert parsed.request == req and parsed.to_dag() == doc


def test_manifest_entries_are_checked_and_bounded() -> None:
    doc = manifest.example_dag()
    entry = doc["receipts"][0]
    for change, match in (
        ({"leaf": "0x01"}, r"receipts\[0\].leaf must be 32 bytes"),
        ({"traceCid": "nope"}, r"receipts\[0\].traceCid is not a CID"),
        ({"receipt": {"fee": "1"}}, r"receipts\[0\].receipt"),
        ({"request": {**entry["request"], "maxFee": "x"}}, r"receipts\[0\].request"),
    ):
        with pytest.raises(FormatError, match=match):
            BatchManifest.from_dag({**doc, "receipts": [{**entry, **change}]})
    with pytest.raises(FormatError, match="more than 512"):
        BatchManifest.from_dag({**doc, "receipts": [entry] * 513})
    posted = copy.deepcopy(entry)
    posted["signature"] = None  # posted on chain: no node signature, allowed
    assert BatchManifest.from_dag({**doc, "receipts": [posted]}).entries[0].signature is None


def test_evidence_holds_anything_a_trace_could_make_it_quote() -> None:
    hostile = {"big": 2**100, "nan": float("nan"), "surrogate": "\ud800", "deep": [[[[1]]]], b"k": b"\x00"}
    finding = EvidenceFinding("tool", "x", 0, None, hostile, (1, 2))
    ev = Evidence(1, 2, b"\x01" * 32, b"\x02" * 32, "0x", "0x07", None, 0, 1, (finding,))
    doc = ev.to_dag()
    encode_dag(doc)  # encodable
    back = Evidence.from_dag(doc)
    assert back.fraud and back.findings[0].claimed == [1, 2]
    assert back.findings[0].expected["big"] == str(2**100)
    with pytest.raises(FormatError, match="fraud must say"):
        Evidence.from_dag({**doc, "fraud": False})
    nested: Any = 1
    for _ in range(100):
        nested = [nested]
    assert "…" in repr(plain(nested))  # bounded depth
