"""Node choice (`supernet.sdk.client.routing`): every node probed at once, ranked by one score of
task fee (``taskFee``), measured latency and on-chain record (slashes, open disputes), stake
breaking ties; the ones left out keep their reason. And which failures of a node move the client on
to the next one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
from supernet.sdk.client.client import _node_down
from supernet.sdk.client.routing import Probe, probe, rank, score
from supernet.sdk.client.types import ClientError, NodeUnreachableError
from supernet.sdk.devnet.processes import free_port


class Info(dict[str, Any]):
    """A ``/v1/node`` answer: a dict, with the ``taskFee`` a node is ranked on as an attribute."""

    @property
    def taskFee(self) -> int:
        return int(self["taskFee"])


def view(node: str, url: str, price: int = 10, stake: int = 5, slashes: int = 0, disputes: int = 0) -> Any:
    return SimpleNamespace(
        node=node,
        endpoint=url,
        price_per_token=price,
        stake=stake,
        slash_count=slashes,
        frozen_count=disputes,
    )


async def test_nodes_are_ranked_by_score_and_failures_explained() -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a real connection refusal
    answers = {
        "http://slashed": Info(models=["m"], taskFee=1),
        "http://dear": Info(models=["m"], taskFee=15),
        "http://cheap-slow": Info(models=["m"], taskFee=5),
        "http://cheap-fast": Info(models=["m"], taskFee=5),
        "http://other-model": Info(models=["x"], taskFee=1),
    }
    delays = {"http://cheap-slow": 0.3}

    async def node_info(url: str) -> dict[str, Any]:
        if url not in answers:
            async with httpx.AsyncClient() as http:
                await http.get(url + "/v1/node")  # raises ConnectError
        await asyncio.sleep(delays.get(url, 0.0))
        return answers[url]

    views = [
        view("0xslashed", "http://slashed", price=1, slashes=1),
        view("0xdear", "http://dear", price=15),
        view("0xslow", "http://cheap-slow", price=5),
        view("0xfast", "http://cheap-fast", price=5),
        view("0xdead", dead, price=1),
        view("0xother", "http://other-model", price=1),
        view("0xhung", "http://hung", price=1),
    ]
    answers["http://hung"] = Info(models=["m"], taskFee=1)
    delays["http://hung"] = 5.0
    probes = await probe(views, node_info, lambda info: "m" in info["models"], per_node_s=1.0)
    assert [p.address for p in rank(probes)] == ["0xfast", "0xslow", "0xdear", "0xslashed"]
    why = {p.address: p.problem for p in probes if not p.ok}
    assert why["0xdead"] is not None and "ConnectError" in why["0xdead"]
    assert why["0xother"] == "does not serve this model"
    assert why["0xhung"] == "no answer within 1 s"
    assert set(why) == {"0xdead", "0xother", "0xhung"}


def node(
    address: str, price: int = 10, latency: float = 0.0, slashes: int = 0, disputes: int = 0, stake: int = 5
) -> Probe:
    info: Any = Info(models=["m"], taskFee=price)  # any answer: the probe is usable; ranked on its fee
    return Probe(address, f"http://{address}", price, stake, slashes, latency, info, None, disputes)


def order(*probes: Probe) -> list[str]:
    return [p.address for p in rank(probes)]


def test_the_score_is_the_documented_product() -> None:
    s = score(9, 0.5, slashes=1, open_disputes=2)
    assert s.total == (9 + 1) * (1 + 0.5 / 1.0) * 10**1 * 2**2
    assert (s.price, s.latency_s, s.slashes, s.open_disputes) == (9, 0.5, 1, 2)
    text = node("0xa", price=9, latency=0.5, slashes=1, disputes=2).explain()
    assert text.startswith("0xa at http://0xa: score 600")  # says which node and each part
    assert "price 9" in text and "500 ms" in text and "10^1 slashes" in text and "2^2 open disputes" in text


def test_each_part_of_the_score_moves_the_ranking() -> None:
    assert order(node("0xdear", price=20), node("0xcheap", price=10)) == ["0xcheap", "0xdear"]
    assert order(node("0xslow", latency=0.5), node("0xfast", latency=0.01)) == ["0xfast", "0xslow"]
    assert order(node("0xslashed", slashes=1), node("0xclean")) == ["0xclean", "0xslashed"]
    assert order(node("0xdisputed", disputes=1), node("0xclean")) == ["0xclean", "0xdisputed"]
    assert order(node("0xpoor", stake=1), node("0xrich", stake=9)) == ["0xrich", "0xpoor"]  # ties only


def test_a_proven_cheater_ranks_below_a_clean_node_up_to_ten_times_its_price() -> None:
    cheater = node("0xcheater", price=5, slashes=1)
    assert order(cheater, node("0xclean", price=40)) == ["0xclean", "0xcheater"]
    assert order(cheater, node("0xclean", price=70)) == ["0xcheater", "0xclean"]  # 71 > 6 x 10
    twice = node("0xtwice", price=1, slashes=2)  # each slash is another factor of 10
    assert order(twice, node("0xclean", price=150)) == ["0xclean", "0xtwice"]
    # a pending verdict weighs less than an upheld one
    assert order(node("0xslashed", slashes=1), node("0xdisputed", disputes=1)) == ["0xdisputed", "0xslashed"]


def test_latency_trades_against_price() -> None:
    # 1 s of measured latency counts as much as the whole price: a node 3x cheaper wins over 1 s
    assert order(node("0xfast", price=29, latency=0.0), node("0xslow", price=9, latency=1.0)) == [
        "0xslow",
        "0xfast",
    ]
    assert order(node("0xfast", price=9, latency=0.0), node("0xslow", price=9, latency=1.0)) == [
        "0xfast",
        "0xslow",
    ]


def test_a_free_node_still_ranks_by_latency_and_record() -> None:
    assert order(node("0xslow", price=0, latency=1.0), node("0xfast", price=0)) == ["0xfast", "0xslow"]
    assert order(node("0xslashed", price=0, slashes=1), node("0xclean", price=0)) == ["0xclean", "0xslashed"]


def test_only_a_node_failing_moves_the_client_on_never_a_refusal() -> None:
    # transport errors reach the failover wrapped by `Client._request` (test_review_client_verify3.py)
    assert _node_down(NodeUnreachableError("http://node", "refused", nothing_sent=True))
    assert _node_down(NodeUnreachableError("http://node", "no whole answer in 30 s"))
    assert _node_down(ClientError("GET ...: 500 boom", 500))
    assert _node_down(ClientError("GET /healthz: 503 draining", 503))
    assert not _node_down(ClientError("POST /v1/tasks: 402 deposit too low", 402))  # the user's problem
    assert not _node_down(ClientError("POST /v1/tasks: 400 bad input", 400))
    assert not _node_down(ClientError("offer 1 is below the node's price 2"))  # a problem on this side
