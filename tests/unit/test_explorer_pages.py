"""Pages degrade instead of failing: with the chain and the store unreachable, what the index
knows is still shown, with a sentence saying what could not be read."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from supernet.explorer.app import ExplorerState, create_app
from supernet.explorer.apply import ingest
from supernet.explorer.chain import ChainLog
from supernet.explorer.content import ContentReader
from supernet.explorer.db.engine import open_database
from supernet.sdk.chain.tasks import TaskManager
from web3 import Web3

NODE = "0x" + "11" * 20
DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there


def test_batch_and_challenge_pages_survive_an_unreachable_chain_and_store() -> None:
    engine = open_database("sqlite://")
    logs = [
        ChainLog(
            1,
            0,
            "0x" + "01" * 32,
            "TaskManager",
            "BatchCommitted",
            {
                "batchId": 1,
                "node": NODE,
                "root": "0x" + "aa" * 32,
                "count": 2,
                "commitBlock": 1,
                "manifestCid": "bafynotthere",
            },
        ),
        ChainLog(
            2,
            0,
            "0x" + "02" * 32,
            "TaskManager",
            "ChallengeOpened",
            {
                "challengeId": 1,
                "batchId": 1,
                "challenger": "0x" + "22" * 20,
                "node": NODE,
                "leaf": "0x" + "cc" * 32,
                "requestHash": "0x" + "dd" * 32,
                "voteDeadline": 100,
                "evidenceCid": "bafyreibjk2zm52hfizr454i2vrctndr2q2oimlwxu36s3or2icabptr6by",
            },
        ),
        ChainLog(
            3,
            0,
            "0x" + "03" * 32,
            "TaskManager",
            "VoteCommitted",
            {"challengeId": 1, "validator": "0x" + "55" * 20, "weight": 10**18},
        ),
    ]
    with Session(engine) as s, s.begin():
        for lg in logs:
            ingest(s, lg, 1_700_000_000)
    tm = TaskManager(Web3(Web3.HTTPProvider(DOWN, request_kwargs={"timeout": 2})), "0x" + "33" * 20)
    state = ExplorerState(engine, ContentReader(DOWN, timeout=2), tm)
    with TestClient(create_app(state)) as client:
        batch = client.get("/batches/1")
        assert batch.status_code == 200 and "chain not reachable" in batch.text
        assert "receipts not indexed (pending)" in batch.text
        challenge = client.get("/challenges/1")
        assert challenge.status_code == 200 and "evidence not available" in challenge.text
        assert "Voting open until" in challenge.text
        assert "<td>sealed</td>" in challenge.text  # a sealed vote: listed, its side not known yet
