"""Payment channels on a real Anvil: EIP-712 digests equal the contract's, redemption, replays,
bad input, one channel per node, and closing a channel."""

from __future__ import annotations

import pytest
from chain_fixtures import USER_DEPOSIT, Actors
from supernet.sdk.chain import (
    Confirmation,
    Contracts,
    TaskRequest,
    Voucher,
    hash_confirmation,
    hash_task_request,
    hash_voucher,
    sign_voucher,
)
from supernet.sdk.chain.anvil import advance_to, increase_time
from supernet.sdk.chain.contract_errors import (
    EarningsHeld,
    EmptyBatch,
    InvalidSignature,
    MalformedVouchers,
    StaleVoucher,
    WithdrawalNotReady,
)
from supernet.sdk.chain.payments import pack_vouchers

pytestmark = pytest.mark.anvil


def test_digests_match_the_contract(deployed: Contracts, actors: Actors) -> None:
    pay = deployed.payments
    req = TaskRequest(
        user=actors.users[0].address,
        node=actors.node.address,
        model_id=b"\x01" * 32,
        agent_hash=b"\x02" * 32,
        input_hash=b"\x03" * 32,
        max_fee=12345,
        nonce=7,
        deadline=1_900_000_000,
    )
    assert pay.hash_task_request(req) == hash_task_request(req, deployed.domain)
    v = Voucher(actors.users[0].address, actors.node.address, 10**18 + 1)
    assert pay.hash_voucher(v) == hash_voucher(v, deployed.domain)
    conf = Confirmation(b"\x04" * 32, b"\x05" * 32)
    assert pay.hash_confirmation(conf) == hash_confirmation(conf, deployed.domain)


def test_redeem_many_then_replay_is_rejected(network: Contracts, actors: Actors) -> None:
    node = network.as_account(actors.node).payments
    vouchers = [Voucher(u.address, actors.node.address, 1000 * (i + 1)) for i, u in enumerate(actors.users)]
    sigs = [sign_voucher(v, network.domain, u) for v, u in zip(vouchers, actors.users, strict=True)]
    earnings0, escrow0 = node.node_account(actors.node.address)
    tx = node.redeem(vouchers, sigs)
    assert tx.value == 1000 + 2000 + 3000
    earnings, escrow = node.node_account(actors.node.address)
    share = network.params.verification_share_bps
    assert escrow - escrow0 == 6000 * share // 10_000, "the verification share goes to the escrow"
    assert earnings - earnings0 == 6000 - 6000 * share // 10_000, "the rest to the node's earnings"
    # held until the disputes over what the fees paid are over (Payments' hold), then pulled
    held, free_at = node.held_earnings(actors.node.address)
    now = int(network.w3.eth.get_block("latest")["timestamp"])
    assert held == earnings and free_at >= now + node.hold_period()
    with pytest.raises(EarningsHeld):
        node.withdraw_earnings()
    advance_to(network.w3, free_at)
    balance = network.w3.eth.get_balance(actors.node.address)
    tx = node.withdraw_earnings()
    fee = tx.gas_used * int(tx.receipt["effectiveGasPrice"])
    assert network.w3.eth.get_balance(actors.node.address) == balance - fee + earnings, "pulled"
    assert node.node_account(actors.node.address) == (0, escrow), "the escrow stays"
    assert node.redeemed(actors.users[1].address, actors.node.address) == 2000
    assert node.channel(actors.users[0].address, actors.node.address).balance == USER_DEPOSIT - 1000

    with pytest.raises(StaleVoucher) as exc:
        node.redeem(vouchers[:1], sigs[:1])
    assert exc.value.alreadyRedeemed == 1000 and exc.value.user == actors.users[0].address

    # A later cumulative voucher pays only the difference.
    later = Voucher(actors.users[0].address, actors.node.address, 2500)
    assert node.redeem([later], [sign_voucher(later, network.domain, actors.users[0])]).value == 1500


def test_bad_signatures_and_lengths_are_typed(network: Contracts, actors: Actors) -> None:
    node = network.as_account(actors.node).payments
    user = actors.users[0]
    v = Voucher(user.address, actors.node.address, 1000)
    good = sign_voucher(v, network.domain, user)

    v2 = Voucher(actors.users[1].address, actors.node.address, 1000)
    forged = sign_voucher(v2, network.domain, actors.outsider)
    with pytest.raises(InvalidSignature) as exc:
        node.redeem([v, v2], [good, forged])
    assert exc.value.index == 1  # the whole call reverts: nothing was redeemed
    assert node.redeemed(user.address, actors.node.address) == 0
    with pytest.raises(ValueError, match="65 bytes"):  # refused before anything is sent
        node.redeem([v], [good[:64]])
    with pytest.raises(ValueError, match="signatures"):
        node.redeem([v, v], [good])
    # What the contract itself refuses, sent raw: no records, a partial record.
    with pytest.raises(EmptyBatch):
        node.transact("redeem", b"")
    packed = pack_vouchers([v], [good])
    with pytest.raises(MalformedVouchers) as bad:
        node.transact("redeem", packed[:95])
    assert bad.value.length == 95
    # The malleable twin of a good signature (s -> n - s, parity flipped) is refused on chain.
    r, vs = int.from_bytes(packed[32:64], "big"), int.from_bytes(packed[64:96], "big")
    s_, parity = vs & ((1 << 255) - 1), vs >> 255
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin = packed[:64] + ((n - s_) | ((1 - parity) << 255)).to_bytes(32, "big")
    assert r and twin != packed
    with pytest.raises(InvalidSignature):
        node.transact("redeem", twin)
    # The node is not in a packed voucher: another node redeeming it checks the signature
    # against its own channel's digest, where it fails.
    with pytest.raises(InvalidSignature):
        network.as_account(actors.node2).payments.redeem([v], [good])
    assert node.redeemed(user.address, actors.node.address) == 0


def test_a_channel_pays_only_its_node(network: Contracts, actors: Actors) -> None:
    user = actors.users[0]
    v = Voucher(user.address, actors.node2.address, 5000)  # node2: no channel from this user
    node2 = network.as_account(actors.node2).payments
    assert node2.redeem([v], [sign_voucher(v, network.domain, user)]).value == 0
    assert node2.channel(user.address, actors.node.address).balance == USER_DEPOSIT  # untouched


def test_closing_a_channel_is_delayed_and_the_node_redeems_first(network: Contracts, actors: Actors) -> None:
    user = actors.users[0]
    pay = network.as_account(user).payments
    pay.request_withdrawal(actors.node.address)
    assert pay.channel(user.address, actors.node.address).closing
    with pytest.raises(WithdrawalNotReady):
        pay.withdraw(actors.node.address)
    v = Voucher(user.address, actors.node.address, 5000)
    node = network.as_account(actors.node).payments
    assert node.redeem([v], [sign_voucher(v, network.domain, user)]).value == 5000  # within the delay
    increase_time(network.w3, network.params.withdrawal_delay + 1)
    before = network.w3.eth.get_balance(user.address)
    tx = pay.withdraw(actors.node.address)
    got = network.w3.eth.get_balance(user.address) - before + tx.gas_used * tx.receipt["effectiveGasPrice"]
    assert got == USER_DEPOSIT - 5000
    channel = pay.channel(user.address, actors.node.address)
    assert channel.balance == 0 and not channel.closing
