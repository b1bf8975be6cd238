"""Node choice (`supernet.sdk.client.routing`): every node probed at once, ranked by slashes,
price, latency and stake; the ones left out keep their reason."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
from supernet.sdk.client.routing import probe, rank
from supernet.sdk.devnet.processes import free_port


def view(node: str, url: str, price: int = 10, stake: int = 5, slashes: int = 0) -> Any:
    return SimpleNamespace(node=node, endpoint=url, price_per_token=price, stake=stake, slash_count=slashes)


async def test_nodes_are_ranked_clean_first_then_cheap_then_fast_and_failures_explained() -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a real connection refusal
    answers = {
        "http://slashed": {"models": ["m"]},
        "http://dear": {"models": ["m"]},
        "http://cheap-slow": {"models": ["m"]},
        "http://cheap-fast": {"models": ["m"]},
        "http://other-model": {"models": ["x"]},
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
        view("0xdear", "http://dear", price=50),
        view("0xslow", "http://cheap-slow", price=5),
        view("0xfast", "http://cheap-fast", price=5),
        view("0xdead", dead, price=1),
        view("0xother", "http://other-model", price=1),
        view("0xhung", "http://hung", price=1),
    ]
    answers["http://hung"] = {"models": ["m"]}
    delays["http://hung"] = 5.0
    probes = await probe(views, node_info, lambda info: "m" in info["models"], per_node_s=1.0)
    assert [p.address for p in rank(probes)] == ["0xfast", "0xslow", "0xdear", "0xslashed"]
    why = {p.address: p.problem for p in probes if not p.ok}
    assert why["0xdead"] is not None and "ConnectError" in why["0xdead"]
    assert why["0xother"] == "does not serve this model"
    assert why["0xhung"] == "no answer within 1 s"
    assert set(why) == {"0xdead", "0xother", "0xhung"}
