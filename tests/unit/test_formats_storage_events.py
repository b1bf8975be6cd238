"""The trace's storage events added after the first ones: ``storage.rollback``, ``storage.delete``
and ``storage.versions`` read strictly, round-trip exactly and name the blocks their replay reads
(the golden trace and the older kinds are untouched: tests/unit/test_formats.py)."""

from __future__ import annotations

from typing import Any

import pytest
from supernet.sdk.formats import trace
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import (
    StorageDeleteEvent,
    StorageRollbackEvent,
    StorageVersionsEvent,
    Trace,
    event_from_dag,
    witness_reads,
)
from supernet.sdk.store.cids import compute_cid, encode_dag, link
from supernet.sdk.store.files import file_cid

PREV = link(compute_cid(encode_dag({"files": {}}), "dag-cbor"))
ROOT = link(compute_cid(encode_dag({"files": {"a": []}}), "dag-cbor"))
ROOT2 = link(compute_cid(encode_dag({"files": {"b": []}}), "dag-cbor"))
F = link(file_cid(b"file"))

ROLLBACK = {"namespace": "ns", "path": "a", "cid": F, "root": ROOT, "prev_root": PREV, "version": 3}
DELETE = {"namespace": "ns", "path": "a", "root": ROOT2, "prev_root": ROOT, "version": 4}
EVENTS: list[dict[str, Any]] = [
    {"kind": "storage.rollback", **ROLLBACK},
    {"kind": "storage.delete", **DELETE},
    {"kind": "storage.versions", "namespace": "ns", "path": "a", "root": ROOT2, "versions": [F, None, F]},
    {"kind": "storage.versions", "namespace": "ns", "path": "b", "root": None, "versions": []},
]


def test_new_storage_events_round_trip_and_name_their_reads() -> None:
    typed = [event_from_dag(e) for e in EVENTS]
    assert [type(t) for t in typed] == [
        StorageRollbackEvent,
        StorageDeleteEvent,
        StorageVersionsEvent,
        StorageVersionsEvent,
    ]
    assert [t.to_dag() for t in typed] == EVENTS
    assert typed[2].versions == (str(F), None, str(F))  # type: ignore[union-attr]
    doc = {**trace.example_dag(), "events": EVENTS}
    assert Trace.from_dag(doc).to_dag() == doc
    assert witness_reads(typed) == [("block", str(PREV)), ("block", str(ROOT)), ("block", str(ROOT2))]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({**EVENTS[0], "prev_root": None}, r"prev_root must be a CID"),
        ({**EVENTS[0], "version": 0}, r"version"),
        ({**EVENTS[1], "cid": F}, r"cid is not a field"),
        ({**EVENTS[2], "versions": ["x"]}, r"versions\[0\]"),
        ({k: v for k, v in EVENTS[2].items() if k != "path"}, r"path is missing"),
    ],
)
def test_new_storage_events_are_read_strictly(event: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        event_from_dag(event)


MISSING = {
    "kind": "storage.missing",
    "namespace": "ns",
    "op": "storage.get",
    "path": "a",
    "version": "not-a-cid: the agent's own text",
    "root": ROOT,
    "error": "FileNotFoundError: no such version",
}


def test_a_miss_round_trips_names_its_root_and_is_read_strictly() -> None:
    typed = event_from_dag(MISSING)
    assert isinstance(typed, trace.StorageMissingEvent) and typed.to_dag() == MISSING
    assert witness_reads([typed]) == [("block", str(ROOT))]
    assert event_from_dag({**MISSING, "root": None, "version": None}).to_dag()["root"] is None
    with pytest.raises(FormatError, match=r"op"):
        event_from_dag({**MISSING, "op": "storage.put"})  # a put cannot miss
    with pytest.raises(FormatError, match=r"root"):
        event_from_dag({**MISSING, "root": "not a link"})
