"""One node process per database (`Database.open(exclusive=True)`, what `runner.open_bound` uses).

Two node processes on one data directory each sign an answer to the same claim, or a commit of the
same batch, at consecutive nonces, and the second reverts at the node's cost
(tests/unit/test_review_session_changes24.py). The second process is now refused at its start.
Real processes: the other one is a real Python subprocess opening the same file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from supernet.node.service.db import Database, DatabaseInUseError

OPEN_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from supernet.node.service.db import Database, DatabaseInUseError
try:
    Database.open(Path(sys.argv[1]), exclusive=True).close()
except DatabaseInUseError as exc:
    print(exc)
    sys.exit(3)
"""


def _other_process_opens(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OPEN_IN_ANOTHER_PROCESS, str(path)], capture_output=True, text=True, timeout=60
    )


def test_a_second_process_is_refused_while_the_node_holds_its_database(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    db = Database.open(path, exclusive=True)
    try:
        other = _other_process_opens(path)
        assert other.returncode == 3, other.stderr
        assert "another process holds the node's database" in other.stdout
        db.set_claims_cursor(7)  # the holder goes on undisturbed
        assert db.claims_cursor() == 7
    finally:
        db.close()
    assert _other_process_opens(path).returncode == 0, "free once the node closed it"


def test_a_new_data_directory_is_created_with_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "new" / "node-1" / "node.sqlite3"  # a node's first start
    Database.open(path, exclusive=True).close()
    assert path.exists() and path.with_name("node.sqlite3.lock").exists()


def test_the_same_process_may_open_it_again_and_plain_opens_take_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    first = Database.open(path, exclusive=True)
    again = Database.open(path, exclusive=True)  # a restart within one process (tests, a supervisor)
    plain = Database.open(path)
    for db in (plain, again, first):
        db.close()
    reader = Database.open(path)  # a plain open (an operator's tool) holds nothing
    try:
        assert _other_process_opens(path).returncode == 0
    finally:
        reader.close()


def test_the_error_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from supernet.node.service.db import Database\n"
         "db = Database.open(Path(sys.argv[1]), exclusive=True)\nprint('held', flush=True)\ntime.sleep(60)",
         str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseInUseError, match=str(path.name)) as err:
            Database.open(path, exclusive=True)
        assert "stop the other node" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    Database.open(path, exclusive=True).close()  # the holder died: its lock went with it
