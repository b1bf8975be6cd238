"""The explorer's ingest path on synthetic events: what each event does to the index, and that a
rebuild from the events table (how a reorg is undone) gives back the same index."""

from __future__ import annotations

import dataclasses
from typing import Any

from eth_account import Account
from eth_utils import keccak
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.apply import attach_manifest, ingest, project
from supernet.explorer.chain import ChainLog
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Batch, Challenge, Event, Operator
from supernet.explorer.details import task_detail
from supernet.explorer.indexer import DERIVED
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, trace_hash
from supernet.sdk.formats.manifest import BatchManifest, ManifestEntry

ETH = 10**18
NODE = "0x" + "11" * 20
V1, V2 = "0x" + "22" * 20, "0x" + "33" * 20
USER_KEY = Account.from_key(keccak(b"explorer ingest user"))
USER = USER_KEY.address
DOMAIN = Domain(31337, "0x" + "5a" * 20)
FEE = 10**14  # the cheated task's signed maxFee
HELD = 3 * 10**17  # a fraud verdict's refund cap (rest / 2), held until the request's signer claims


def log(n: int, contract: str, name: str, **args: Any) -> ChainLog:
    return ChainLog(block=n, log_index=0, tx_hash="0x" + f"{n:064x}", contract=contract, name=name, args=args)


STORY = [
    log(
        1,
        "ServiceManager",
        "NodeRegistered",
        node=NODE,
        endpoint="http://n",
        modelIds=["0x" + "07" * 32],
        pricePerToken=10**9,
        stake=10 * ETH,
    ),
    log(2, "ServiceManager", "ValidatorRegistered", validator=V1, stake=5 * ETH),
    log(3, "ServiceManager", "ValidatorRegistered", validator=V2, stake=5 * ETH),
    log(4, "ServiceManager", "StakeAdded", operator=V2, amount=ETH, newStake=6 * ETH),
    log(
        5,
        "TaskManager",
        "BatchCommitted",
        batchId=1,
        node=NODE,
        root="0x" + "aa" * 32,
        count=4,
        commitBlock=5,
        manifestCid="bafy",
    ),
    log(7, "TaskManager", "Voted", challengeId=1, validator=V1, fraud=True, weight=5 * ETH),
    log(
        8,
        "TaskManager",
        "ChallengeOpened",
        challengeId=1,
        batchId=1,
        challenger=V1,
        node=NODE,
        leaf="0x" + "cc" * 32,
        requestHash="0x" + "dd" * 32,
        voteDeadline=100,
        evidenceCid="bafyev",
    ),
    log(9, "ServiceManager", "Frozen", operator=NODE, frozenCount=1),
    # a sealed vote: listed from its commit on, its side unknown until its ``Voted``
    ChainLog(
        block=9,
        log_index=1,
        tx_hash="0x" + "09" * 32,
        contract="TaskManager",
        name="VoteCommitted",
        args={"challengeId": 1, "validator": V2, "weight": 6 * ETH},
    ),
    log(10, "TaskManager", "Voted", challengeId=1, validator=V2, fraud=True, weight=6 * ETH),
    log(
        11,
        "ServiceManager",
        "UnbondRequested",
        operator=NODE,
        amount=2 * ETH,
        totalUnbonding=2 * ETH,
        readyAt=200,
    ),
    log(12, "ServiceManager", "Slashed", operator=NODE, amount=ETH, fromStake=ETH, fromUnbonding=0),
    log(13, "ServiceManager", "Unfrozen", operator=NODE, frozenCount=0),
    log(
        14,
        "TaskManager",
        "ChallengeResolved",
        challengeId=1,
        fraud=True,
        fraudStake=11 * ETH,
        honestStake=0,
        slashed=ETH,
        refund=HELD,  # the cap held for the request's signer until it claims
        challengerReward=ETH // 5,
        voterPool=ETH // 10,
        burned=ETH // 2,
    ),
    log(15, "Payments", "Redeemed", node=NODE, vouchers=2, total=3 * 10**14, toEscrow=6 * 10**13),
    log(
        16,
        "TaskManager",
        "ChallengeOpened",
        challengeId=2,
        batchId=1,
        challenger=V2,
        node=NODE,
        leaf="0x" + "cd" * 32,
        requestHash="0x" + "ce" * 32,
        voteDeadline=1_700_000_100,
        evidenceCid="bafyev2",
    ),
    log(
        17,
        "TaskManager",
        "DecoyRevealed",
        challengeId=2,
        node=NODE,
        challenger=V2,
        bounty=45 * 10**15,
        rebate=5 * 10**15,
    ),
    log(18, "TaskManager", "VoteExtended", challengeId=2, voteDeadline=1_700_000_400),
    # the user claims: its signed maxFee out of what was held, the rest burned
    dataclasses.replace(
        log(18, "TaskManager", "RefundClaimed", challengeId=1, user=USER, amount=FEE, burned=HELD - FEE),
        log_index=1,
    ),
]


def fill(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        for lg in STORY:
            ingest(s, lg, 1_700_000_000 + lg.block, gas_used=120_000 if lg.name == "BatchCommitted" else 0)


def snapshot(engine: Engine) -> dict[str, Any]:
    with Session(engine) as s:
        doc = queries.network(s)
        ch = queries.challenge(s, 1)
    doc.pop("events")
    return {"network": doc, "challenge": ch}


def test_each_event_lands_where_people_look() -> None:
    engine = open_database("sqlite://")
    fill(engine)
    with Session(engine) as s:
        node = s.get(Operator, NODE)
        assert node is not None
        assert (node.stake, node.unbonding, node.slash_count, node.slashed) == (7 * ETH, 2 * ETH, 1, ETH)
        assert queries.operator_status(node) == "slashed" and node.batches == 1
        v1, v2 = s.get(Operator, V1), s.get(Operator, V2)
        assert v1 is not None and v2 is not None
        assert (v1.votes, v1.challenges_won, v2.stake) == (1, 1, 6 * ETH)
        ch = s.get(Challenge, 1)
        assert ch is not None and ch.status == "fraud" and ch.refund == FEE  # credited, not the cap held
        assert ch.refund_claimed_at == 1_700_000_018
        assert ch.burned == ETH // 2 + HELD - FEE  # at the verdict, then what the claim did not refund
        decoy = s.get(Challenge, 2)
        assert decoy is not None and decoy.status == "decoy" and decoy.challenger_reward == 45 * 10**15
        assert decoy.vote_deadline == 1_700_000_400  # moved by an availability claim (VoteExtended)
        totals = queries.totals(s)
        assert (totals["decoys"], totals["decoy_bounties"]) == (1, 45 * 10**15)
        # "Refunded" is what RefundClaimed credited (FEE), not the verdict's cap; the held remainder
        # burned once (at the claim), and nothing is held any more
        assert totals["slashed"] == ETH and totals["refunded"] == FEE and totals["redeemed"] == 3 * 10**14
        assert totals["burned"] == ETH // 2 + HELD - FEE and totals["refunds_held"] == 0
        assert totals["gas_per_task"] == 0  # no manifest yet: a commit's count is the node's word
        doc = queries.challenge(s, 1)
        assert doc is not None and [v["weight"] for v in doc["votes"]] == [6 * ETH, 5 * ETH]  # heaviest first
        addr = queries.address(s, NODE)
        assert {e["name"] for e in addr["events"]} >= {"NodeRegistered", "Slashed", "Frozen"}
        assert "VoteCommitted" in {e["name"] for e in queries.address(s, V2)["events"]}
        charts = queries.charts(s)
        assert charts["stake_eth"][-1][1] == 7 + 5 + 6  # total active stake after the slash
        assert charts["tasks_per_minute"] == [] and charts["gas_per_task"] == []  # idem


def test_a_verdicts_refund_is_held_until_claimed() -> None:
    """Until its ``RefundClaimed``, a fraud verdict's refund is held for the user (shown as such),
    not refunded: a refund nobody can claim (a fabricated receipt's) is never counted as paid."""
    engine = open_database("sqlite://")
    with Session(engine) as s, s.begin():
        for lg in STORY[:-1]:  # all but the claim
            ingest(s, lg, 1_700_000_000 + lg.block)
    with Session(engine) as s:
        totals = queries.totals(s)
        assert (totals["refunded"], totals["refunds_held"], totals["burned"]) == (0, HELD, ETH // 2)
        ch = s.get(Challenge, 1)
        assert ch is not None and (ch.refund, ch.refund_claimed_at) == (HELD, None)
    with Session(engine) as s, s.begin():
        ingest(s, STORY[-1], 1_700_000_018)
        ingest(
            s,
            log(
                19, "TaskManager", "AvailabilitySettled", availabilityId=1, answerCost=7, refunded=5, burned=3
            ),
            1_700_000_019,
        )
    with Session(engine) as s:
        totals = queries.totals(s)
        assert (totals["refunded"], totals["refunds_held"]) == (FEE, 0)
        assert totals["burned"] == ETH // 2 + HELD - FEE + 3  # an answered availability claim's burn too


def test_a_sealed_vote_is_listed_from_its_commit_and_takes_its_side_when_opened() -> None:
    """A vote row appears at ``VoteCommitted`` (side unknown, the sealed weight), is counted once for
    its voter, and takes its side and counting weight at ``Voted``; one never opened stays sideless."""
    engine = open_database("sqlite://")
    fill(engine)
    v3 = "0x" + "55" * 20
    sealed = [
        log(19, "ServiceManager", "ValidatorRegistered", validator=v3, stake=2 * ETH),
        log(20, "TaskManager", "VoteCommitted", challengeId=2, validator=v3, weight=2 * ETH),
    ]
    with Session(engine) as s, s.begin():
        for lg in sealed:
            ingest(s, lg, 1_700_000_000 + lg.block)
    with Session(engine) as s:
        (vote,) = (queries.challenge(s, 2) or {})["votes"]
        assert vote["validator"] == v3
        assert (vote["fraud"], vote["weight"], vote["sealed_at"]) == (None, 2 * ETH, 1_700_000_020)
        v2_votes = {v["validator"]: v for v in (queries.challenge(s, 1) or {})["votes"]}
        opened = [v for v in v2_votes.values() if v["sealed_at"] is not None]
        assert len(opened) == 1 and opened[0]["fraud"] is True and opened[0]["sealed_at"] == 1_700_000_009
        op2 = s.get(Operator, opened[0]["validator"])
        assert op2 is not None and op2.votes == 1  # sealed then opened: one vote, not two
    with Session(engine) as s, s.begin():
        ingest(
            s,
            log(21, "TaskManager", "Voted", challengeId=2, validator=v3, fraud=False, weight=ETH),
            1_700_000_021,
        )
    with Session(engine) as s:
        (vote,) = (queries.challenge(s, 2) or {})["votes"]
        assert (vote["fraud"], vote["weight"], vote["timestamp"]) == (False, ETH, 1_700_000_021)


def test_rebuilding_from_the_events_table_gives_the_same_index() -> None:
    engine = open_database("sqlite://")
    fill(engine)
    before = snapshot(engine)
    with Session(engine) as s, s.begin():
        for table in DERIVED:
            s.execute(delete(table))
        for ev in s.scalars(select(Event).order_by(Event.block, Event.log_index)):
            project(s, ev)
    assert snapshot(engine) == before


def _manifest(node: str, signature: bytes, count: int = 2, *, signed: bool = True) -> BatchManifest:
    """Receipts of requests ``USER`` signed for ``node`` (``signed=False``: the node's word only)."""
    entries = []
    for i in range(count):
        req = TaskRequest(USER, node, b"\x07" * 32, bytes(32), input_hash(f"q{i}"), 10**14, i, 2**40)
        r = Receipt(
            hash_task_request(req, DOMAIN),
            USER,
            b"\x07" * 32,
            input_hash(f"q{i}"),
            output_hash("a"),
            trace_hash(TRACE_CID),
            10**14,
        )
        user_signature = sign_task_request(req, DOMAIN, USER_KEY) if signed else None
        entries.append(ManifestEntry(r, r.leaf(), signature, TRACE_CID, "chat", req, user_signature))
    return BatchManifest.seal(node, entries)


TRACE_CID = "bafyreibjk2zm52hfizr454i2vrctndr2q2oimlwxu36s3or2icabptr6by"


def test_a_manifest_is_accepted_only_when_it_matches_the_commit() -> None:
    engine = open_database("sqlite://")
    fill(engine)
    good = _manifest(NODE, b"\x05" * 65)
    with Session(engine) as s, s.begin():
        ingest(
            s,
            log(
                20,
                "TaskManager",
                "BatchCommitted",
                batchId=2,
                node=NODE,
                root="0x" + good.root.hex(),
                count=2,
                commitBlock=20,
                manifestCid="bafy2",
            ),
            1_700_000_020,
            gas_used=64_000,
        )
        ingest(
            s,
            log(
                21,
                "TaskManager",
                "BatchCommitted",
                batchId=3,
                node=NODE,
                root="0x" + "99" * 32,
                count=2,
                commitBlock=21,
                manifestCid="bafy3",
            ),
            1_700_000_021,
        )
    with Session(engine) as s, s.begin():
        b2, b3 = s.get(Batch, 2), s.get(Batch, 3)
        assert b2 is not None and b3 is not None
        attach_manifest(s, b2, good, domain=DOMAIN)
        attach_manifest(s, b3, good, domain=DOMAIN)  # its leaves do not build batch 3's root
        assert (b2.manifest_status, b3.manifest_status) == ("ok", "invalid")
        assert b3.manifest_error is not None and "root" in b3.manifest_error
    with Session(engine) as s:
        assert queries.totals(s)["tasks"] == 2
        assert queries.totals(s)["gas_per_task"] == 32_000  # 64,000 gas over the 2 receipts proven
        assert queries.charts(s)["gas_per_task"] == [(1_700_000_020, 32_000.0)]
        # A node's garbage "signature" makes verification fail with a reason, not the page crash.
        detail = task_detail(s, None, "0x" + good.entries[0].receipt.request_hash.hex())
        assert detail is not None and detail.verification is not None and not detail.verification.ok
        assert [c.name for c in detail.verification.failed()] == ["node signature"]
        assert detail.proof and detail.trace is None and detail.trace_error


def test_receipts_the_user_did_not_sign_count_in_no_total() -> None:
    """A manifest is the node's word: entries without the user's signature of a request for this
    node (or whose request's digest is not the task id) are kept as claims, never as tasks."""
    engine = open_database("sqlite://")
    fill(engine)
    unsigned = _manifest(NODE, b"\x05" * 65, signed=False)
    forged = _manifest(NODE, b"\x05" * 65, count=1)
    e = forged.entries[0]  # the user's signature, moved onto another task id
    other = Receipt(b"\x09" * 32, *dataclasses.astuple(e.receipt)[1:])
    forged = BatchManifest.seal(NODE, [dataclasses.replace(e, receipt=other, leaf=other.leaf())])
    with Session(engine) as s, s.begin():
        for batch_id, m in ((2, unsigned), (3, forged)):
            ingest(
                s,
                log(
                    20 + batch_id,
                    "TaskManager",
                    "BatchCommitted",
                    batchId=batch_id,
                    node=NODE,
                    root="0x" + m.root.hex(),
                    count=len(m.entries),
                    commitBlock=20,
                    manifestCid="bafy",
                ),
                1_700_000_020,
            )
    with Session(engine) as s, s.begin():
        for batch_id, m in ((2, unsigned), (3, forged)):
            b = s.get(Batch, batch_id)
            assert b is not None
            attach_manifest(s, b, m, domain=DOMAIN)
            assert b.manifest_status == "ok"
    with Session(engine) as s:
        totals = queries.totals(s)
        assert (totals["tasks"], totals["fees"], totals["claims"], totals["committed"]) == (0, 0, 3, 3)
        assert queries.address(s, USER)["receipts"] == []  # on no user's page
        assert len(queries.address(s, NODE)["receipts"]) == 3  # the node's own page lists its claims
        detail = task_detail(s, None, "0x" + unsigned.entries[0].receipt.request_hash.hex())
        assert detail is not None and detail.verification is not None
        assert "request signed by the user" in [c.name for c in detail.verification.failed()]
