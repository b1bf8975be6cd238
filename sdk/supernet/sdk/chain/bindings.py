"""The base of the typed contract wrappers: generated ABIs, transactions, reverts as exceptions.

ABIs and bytecode come from ``abi/<Name>.json`` (generated from forge's artifacts by
``scripts/gen_bindings.py``). A `Binding` signs transactions locally with the account it was
given, estimates gas first (so a revert surfaces before anything is sent) and turns every revert
into the generated `ContractError` subclass.

>>> abi = load_abi("Payments")                                 # doctest: +SKIP
>>> pay = Binding.at(w3, "Payments", address, account)         # doctest: +SKIP
>>> receipt = pay.transact("deposit", value=10**18)            # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from supernet.sdk.chain.errors import (
    BindingsError,
    ChainError,
    ContractError,
    InsufficientFundsError,
    TransactionFailed,
    decode_revert,
)
from supernet.sdk.chain.logs import Fetch, LogRanges
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.middleware.base import Web3Middleware
from web3.types import (
    EventData,
    MakeRequestFn,
    Nonce,
    RPCEndpoint,
    RPCResponse,
    TxParams,
    TxReceipt,
    Wei,
)

log = logging.getLogger(__name__)

GAS_MARGIN_PCT = 130
"""Gas limit sent = estimate × 1.3 (unused gas is not charged), within `TX_GAS_CAP`."""

TX_GAS_CAP = 1 << 24
"""EIP-7825's most gas one transaction may ask for (mainnet since Osaka): the margin above never
takes a limit past it, or a transaction that fits (an availability answer with a large trace)
would be refused for its margin alone."""

MAX_PRIORITY_FEE = 50 * 10**9
"""The default ceiling on a transaction's priority fee (tip), in wei per gas: 50 gwei. The tip is
the RPC's suggestion, and what the tip pays goes to the block's producer, who may run (or pay) the
RPC: the ceiling is fixed here, not derived from the RPC's answers. 50 gwei sits above the tips
chains ask in practice (mainnet's are usually a few gwei or less, Polygon PoS enforces a 25-30
gwei minimum, BNB Chain about 1), and bounds a lying RPC to 50 gwei a gas (about 0.005 ETH for a 100,000
gas deposit) instead of whatever it answers. A tip above it is refused, never lowered silently
(the transaction might then never be mined): callers raise it (``tip_ceiling``, the CLI's
``--max-priority-fee``)."""

DAEMON_MAX_PRIORITY_FEE = 500 * 10**9
"""The node's and the validator's default tip ceiling (their ``[chain] max_priority_fee_gwei``):
500 gwei, 10x `MAX_PRIORITY_FEE`. Their transactions are duties that protect their stake (a
node's commits and answers, a validator's votes, reveals and claims: a missed answer is slashed,
an unopened vote loses its bond), sent unattended: a fee spike above a user's 50 gwei must not
stop them (Polygon PoS asks 60+ gwei at busy times), while the ceiling still bounds what a lying
RPC takes per transaction (500 gwei x a 1M gas answer = 0.5 ETH, against the 1+ ETH slash it
protects; unbounded it was ~9 ETH a commit). A duty refused above it is logged as an error
(`fee_alarm`)."""


MAX_ANSWER_FLOOR = 10_000 * 10**9
"""The highest ``MIN_ANSWER_GAS_PRICE`` a deployment may set (the deploy CLI refuses more). An
answer's tip is the deployment's floor (`Binding.answer`), so an answer's tip may go up to this,
whatever the ceiling on tips an RPC suggests, where the floor is vouched for (the deployment
file's, or the caller's); a floor only the RPC reports is held to the ceiling on tips as any tip
an RPC suggests."""


class FeeTooHigh(ChainError):
    """The priority fee a transaction would pay is above the caller's ceiling: nothing was sent.

    Attributes:
        tip: the tip (wei per gas) it would have paid (the RPC's suggestion unless the caller's).
        ceiling: the ceiling it is above.
    """

    def __init__(self, tip: int, ceiling: int, suggested: bool = True, *, detail: str | None = None) -> None:
        whose = "the RPC suggests a" if suggested else "the transaction would pay a"
        super().__init__(
            detail
            or f"{whose} priority fee (tip) of {_gwei(tip)} gwei per gas, above the ceiling of "
            f"{_gwei(ceiling)} gwei: nothing sent; to pay it, raise the ceiling "
            f"(--max-priority-fee {_gwei(tip)}gwei)"
            + (", or use another RPC" if suggested else "")
        )
        self.tip = tip
        self.ceiling = ceiling


def _gwei(wei: int) -> str:
    whole, rest = divmod(wei, 10**9)
    return f"{whole}.{rest:09d}".rstrip("0") if rest else str(whole)


@dataclass(frozen=True)
class Fees:
    """The EIP-1559 fees one transaction is signed with (wei per gas)."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int


@dataclass(frozen=True)
class Quote:
    """A transaction's fees and gas limit, before it is signed (`Binding.quote`)."""

    fees: Fees
    gas: int

    @property
    def most(self) -> int:
        """The most its gas can cost (gas limit x fee cap: no block charges more), in wei."""
        return self.gas * self.fees.max_fee_per_gas


def fees(
    w3: Web3,
    max_fee_per_gas: int | None = None,
    max_priority_fee_per_gas: int | None = None,
    tip_ceiling: int = MAX_PRIORITY_FEE,
) -> Fees:
    """The fee policy of every transaction `send` signs: the tip is the caller's, else the RPC's
    suggestion (at most the fee cap), and is refused above ``tip_ceiling``; the fee cap is the
    caller's, else web3's default, twice the latest base fee plus the tip (a base fee the RPC
    inflates raises the cap, not what is paid: a block charges its own base fee plus the tip).

    Raises:
        FeeTooHigh: the tip is above ``tip_ceiling`` (nothing is signed).
    """
    tip = priority_fee(w3, tip_ceiling, max_priority_fee_per_gas, max_fee_per_gas)
    cap = 2 * latest_base_fee(w3) + tip if max_fee_per_gas is None else max_fee_per_gas
    return Fees(cap, tip)


def priority_fee(
    w3: Web3,
    tip_ceiling: int = MAX_PRIORITY_FEE,
    tip: int | None = None,
    max_fee_per_gas: int | None = None,
) -> int:
    """The tip a transaction pays (`fees`' rule): ``tip``, else the RPC's suggestion read once, at
    most ``max_fee_per_gas``; refused above ``tip_ceiling``.

    Raises:
        FeeTooHigh: the tip is above ``tip_ceiling``.
    """
    paid = int(w3.eth.max_priority_fee) if tip is None else tip
    if max_fee_per_gas is not None:
        paid = min(paid, max_fee_per_gas)
    if paid > tip_ceiling:
        raise FeeTooHigh(paid, tip_ceiling, suggested=tip is None)
    return paid


@contextmanager
def fee_alarm(what: str, duty: bool) -> Iterator[None]:
    """A `FeeTooHigh` raised inside, logged as an error where the transaction is a ``duty`` (a
    daemon's commit, answer, vote, reveal or claim: its stake is at risk while it is not sent),
    then raised as it was."""
    try:
        yield
    except FeeTooHigh as exc:
        if duty:
            log.error(
                "DUTY NOT SENT: %s refused, its tip %s gwei is above the ceiling %s gwei; the stake "
                "it protects is at risk until it is sent: raise [chain] max_priority_fee_gwei "
                "(or use another RPC)",
                what,
                _gwei(exc.tip),
                _gwei(exc.ceiling),
            )
        raise


_CHAIN_IDS: weakref.WeakKeyDictionary[Web3, int] = weakref.WeakKeyDictionary()
_CHAIN_IDS_LOCK = threading.Lock()


_PIN_MIDDLEWARE = "supernet_pinned_chain_id"


class _PinnedChainId(Web3Middleware):
    """``eth_chainId`` answered with the pinned id, never asked of the RPC again: web3's own checks
    of a transaction's chain id (its validation middleware, in every thread: web3's request cache
    is per thread) then agree with what it is signed for, so a transaction built in a worker
    thread is signed for the pinned chain instead of refused or signed for the RPC's new one."""

    def wrap_make_request(self, make_request: MakeRequestFn) -> MakeRequestFn:
        def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
            if method == "eth_chainId":
                with _CHAIN_IDS_LOCK:
                    pinned = _CHAIN_IDS.get(cast(Web3, self._w3))
                if pinned is not None:
                    return {"jsonrpc": "2.0", "id": 0, "result": hex(pinned)}
            return make_request(method, params)

        return middleware


def pin_chain_id(w3: Web3, chain_id: int) -> None:
    """Sign every transaction sent through ``w3`` for ``chain_id``, and answer web3's own
    ``eth_chainId`` with it from then on (`Contracts.connect` pins the deployment's, once it
    checked the RPC is on it)."""
    with _CHAIN_IDS_LOCK:
        _pin(w3, chain_id)


def _pin(w3: Web3, chain_id: int) -> int:
    """Pin ``chain_id`` (`_CHAIN_IDS_LOCK` held); returns it."""
    _CHAIN_IDS[w3] = chain_id
    if _PIN_MIDDLEWARE not in w3.middleware_onion:
        w3.middleware_onion.add(_PinnedChainId, name=_PIN_MIDDLEWARE)
    return chain_id


def chain_id(w3: Web3) -> int:
    """The chain id transactions through ``w3`` are signed for: the pinned one, else the RPC's
    answer the first time it is asked, pinned from then on. Never asked again per transaction: an
    RPC whose answer changes must not get a signature for another chain (where the transaction,
    with the nonce it also chose, could be replayed)."""
    with _CHAIN_IDS_LOCK:
        pinned = _CHAIN_IDS.get(w3)
    if pinned is None:
        asked = int(w3.eth.chain_id)
        with _CHAIN_IDS_LOCK:
            pinned = _CHAIN_IDS.get(w3)
            if pinned is None:
                pinned = _pin(w3, asked)
    return pinned


@dataclass(frozen=True)
class TxResult:
    """A mined transaction and the value the wrapper decoded from it (an id, a verdict ...)."""

    receipt: TxReceipt
    value: Any = None

    @property
    def gas_used(self) -> int:
        """Gas the transaction used (intrinsic 21,000 and calldata included)."""
        return int(self.receipt["gasUsed"])

    @property
    def tx_hash(self) -> str:
        """0x-hex transaction hash."""
        return "0x" + bytes(self.receipt["transactionHash"]).hex()

    @property
    def block_number(self) -> int:
        """Block the transaction was mined in."""
        return int(self.receipt["blockNumber"])


@cache
def _load(name: str) -> dict[str, Any]:
    res = files("supernet.sdk.chain") / "abi" / f"{name}.json"
    try:
        doc: dict[str, Any] = json.loads(res.read_text())
    except FileNotFoundError:
        raise BindingsError(f"no generated ABI for {name}: run `make bindings`") from None
    return doc


def load_abi(name: str) -> list[dict[str, Any]]:
    """The generated ABI of contract ``name``."""
    abi: list[dict[str, Any]] = _load(name)["abi"]
    return abi


def load_bytecode(name: str) -> str:
    """The generated creation bytecode (0x-hex) of contract ``name``."""
    code: str = _load(name)["bytecode"]
    return code


@contextmanager
def reverts_as(contract: str) -> Iterator[None]:
    """Re-raise web3's revert exceptions inside the block as typed `ContractError`s."""
    try:
        yield
    except ContractLogicError as exc:
        data = exc.data.get("data") if isinstance(exc.data, dict) else exc.data
        err = decode_revert(data if isinstance(data, str) and data.startswith("0x") else None, contract)
        if not err.data and exc.message:
            err.args = (f"{contract}: {exc.message}",)
        raise err from exc


@contextmanager
def _funds_named(w3: Web3, address: str, what: str) -> Iterator[None]:
    """The node's "insufficient funds" answer, as an error that names the account and its balance
    (web3 reports it without saying whose funds). Wrapped around the estimate (`build_signed`,
    `Binding.quote`) and the send (`send`, `send_ether`): a wallet that covers the estimate but
    not the limit signed with `gas_limit`'s margin is refused only by ``send_raw_transaction``,
    and that refusal is the same `InsufficientFundsError`, not a bare ``Web3RPCError``."""
    try:
        yield
    except Exception as exc:
        if "insufficient funds" not in str(exc).lower():
            raise
        balance = w3.eth.get_balance(Web3.to_checksum_address(address))
        raise InsufficientFundsError(
            f"account {address} cannot pay for {what}: it holds {balance} wei; send it some ether first"
        ) from exc


_SENDERS: dict[str, threading.Lock] = {}
_SENDERS_LOCK = threading.Lock()


def _sender(address: str) -> threading.Lock:
    """One lock per account in this process, held from reading its nonce (`next_nonce`) to handing
    the signed transaction to the node (or to reserving its nonce, `build_signed`'s ``reserve``):
    two threads sending for one account (a validator's reveals run beside its long checks, a
    node's answers beside its commits) would otherwise read the same pending nonce and one would
    be lost."""
    with _SENDERS_LOCK:
        return _SENDERS.setdefault(address.lower(), threading.Lock())


NONCE_RESERVATION_S = 120.0
"""How long a nonce reserved by `build_signed` (``reserve=True``: signed, not yet handed to the
RPC) holds `next_nonce` off it, at most: the signer releases it once it hands the transaction
over (`release_nonce`); one it never releases (an error between signing and sending) stops
holding after this, so a lost reservation opens a gap in the account's nonces for this long, not
for ever (the next transaction then fills it)."""


@dataclass
class _Held:
    """A nonce `next_nonce` skips: ``reserved`` (signed, not yet handed to the RPC), or sent above
    a reserved one (the RPC counts no nonce above a gap in its pending count)."""

    at: float
    reserved: bool


_HELD: weakref.WeakKeyDictionary[Web3, dict[str, dict[int, _Held]]] = weakref.WeakKeyDictionary()
_HELD_LOCK = threading.Lock()

SENT_MEMORY_S = 600.0
"""How long `fill_nonce_gap` leaves alone a nonce this process handed to the RPC while no count
shows it mined: its transaction may still wait in a pool the RPC does not count, and a filler at
its nonce, priced higher, would replace it."""

_SENT: dict[str, dict[int, float]] = {}
"""By account (lowercase), whatever client sent it: the nonces this process handed to an RPC, when."""


def _held(w3: Web3, address: str, pending: int | None = None) -> dict[int, _Held]:
    """``address``'s held nonces on ``w3`` (`_HELD_LOCK` held), pruned: a reservation older than
    `NONCE_RESERVATION_S` goes, every nonce below ``pending`` (the RPC counts it: its own or another
    transaction's), and every sent one once no reservation is left (the RPC counts them then)."""
    held = _HELD.setdefault(w3, {}).setdefault(address.lower(), {})
    now = time.monotonic()
    for nonce, h in list(held.items()):
        if now - h.at > NONCE_RESERVATION_S or (pending is not None and nonce < pending):
            del held[nonce]
    if not any(h.reserved for h in held.values()):
        held.clear()
    return held


def _counts(w3: Web3, address: str) -> tuple[int, int]:
    """``address``'s mined count and its next free nonce by the RPC: the larger of its pending and
    mined counts, since a pending count can lag the latest one (Anvil mining on arrival,
    foundry-rs/foundry #7388; a load balancer's backends): a nonce under the mined count is taken."""
    checksum = Web3.to_checksum_address(address)
    mined = int(w3.eth.get_transaction_count(checksum, "latest"))
    return mined, max(int(w3.eth.get_transaction_count(checksum, "pending")), mined)


def next_nonce(w3: Web3, address: str) -> int:
    """The nonce of ``address``'s next transaction through ``w3``: the one source of every nonce
    this process signs (`build_signed`, `send_ether`), its caller holding `_sender` (``address``)
    until it hands the transaction to the RPC (then `release_nonce` with ``sent``) or reserves its
    nonce (`reserve_nonce`). The RPC's pending count, skipping every nonce this process signed and
    has not yet handed to the RPC (the node's commit, persisted before it is broadcast), which the
    RPC cannot count, and every nonce it sent above one of those (the RPC counts none above the
    gap).

    Held nonces belong to the client (``w3``: the RPC their transactions go to) and the account.
    """
    with _HELD_LOCK:  # read before the count: one released meanwhile is in the count
        before = set(_held(w3, address))
    _, pending = _counts(w3, address)
    with _HELD_LOCK:
        skip = before | set(_held(w3, address, pending))
    nonce = pending
    while nonce in skip:
        nonce += 1
    return nonce


def reserve_nonce(w3: Web3, address: str, nonce: int) -> None:
    """Keep `next_nonce` off ``nonce`` (signed, not yet handed to the RPC) until `release_nonce`,
    or for `NONCE_RESERVATION_S`."""
    with _HELD_LOCK:
        _held(w3, address)[nonce] = _Held(time.monotonic(), reserved=True)


def release_nonce(w3: Web3, address: str, nonce: int | None = None, *, sent: bool = False) -> None:
    """The transaction at ``nonce`` was handed to the RPC (``sent``: the RPC took it), or never
    will be: its reservation, if any, goes (every nonce of ``address`` when ``nonce`` is None: the
    process holds none). One sent above a nonce still reserved stays held (the RPC counts no nonce
    above the gap) until the RPC counts it or no reservation is left."""
    with _HELD_LOCK:
        held = _held(w3, address)
        if nonce is None:
            held.clear()  # (what was sent may still be in a pool: `_SENT` keeps it)
            return
        held.pop(nonce, None)
        if sent:  # in flight until a count shows it mined (`fill_nonce_gap` never takes it)
            _SENT.setdefault(address.lower(), {})[nonce] = time.monotonic()
        if sent and any(h.reserved and n < nonce for n, h in held.items()):
            held[nonce] = _Held(time.monotonic(), reserved=False)
        _held(w3, address)  # sent ones go with the last reservation


@dataclass(frozen=True)
class SignedTx:
    """A contract transaction signed by `build_signed`, not yet sent."""

    raw: bytes
    hash: bytes
    nonce: int
    gas: int


def build_signed(
    w3: Web3,
    account: LocalAccount,
    fn: ContractFunction | ContractConstructor,
    contract: str,
    value: int = 0,
    *,
    max_fee_per_gas: int | None = None,
    max_priority_fee_per_gas: int | None = None,
    tip_ceiling: int = MAX_PRIORITY_FEE,
    gas: int | None = None,
    duty: bool = False,
    reserve: bool = False,
) -> SignedTx:
    """Build and sign one contract transaction at the account's next nonce (`next_nonce`): the one
    signing path of every transaction the project signs (`send`; the node's ``commitBatch``,
    which is persisted before it is sent). Its fees are `fees`' (a tip within ``tip_ceiling``),
    its chain id `chain_id`'s (the pinned one, never the RPC's answer of the moment), its gas
    limit ``gas`` where given (a quote's: what the signer agreed to), else the estimate with
    `gas_limit`'s margin (a revert surfaces here, before anything is signed). The caller holds the
    account's order (`_sender`) until it hands the transaction to the RPC, or, with ``reserve``
    (a transaction kept a while before it is sent), only until this returns: its nonce is then
    reserved (`reserve_nonce`) and the caller releases it (`release_nonce`) once it has handed
    the transaction to the RPC, whether the RPC took it or not.

    Raises:
        FeeTooHigh: the tip is above ``tip_ceiling`` (logged as an error when ``duty``).
        ContractError: the call reverts (gas estimation).
    """
    what = f"{contract}.{getattr(fn, 'fn_name', 'constructor')}"
    with fee_alarm(what, duty), reverts_as(contract), _funds_named(w3, account.address, what):
        fee = fees(w3, max_fee_per_gas, max_priority_fee_per_gas, tip_ceiling)
        params: TxParams = {
            "from": account.address,
            "value": Wei(value),
            "nonce": Nonce(next_nonce(w3, account.address)),
            "chainId": chain_id(w3),
            "maxFeePerGas": Wei(fee.max_fee_per_gas),
            "maxPriorityFeePerGas": Wei(fee.max_priority_fee_per_gas),
        }
        if gas is not None:
            params["gas"] = gas  # no estimate: the quoted limit is signed
        tx = fn.build_transaction(params)
    tx["gas"] = gas if gas is not None else gas_limit(int(tx["gas"]))
    signed = account.sign_transaction(dict(tx))  # type: ignore[arg-type]
    if reserve:
        reserve_nonce(w3, account.address, int(params["nonce"]))
    return SignedTx(bytes(signed.raw_transaction), bytes(signed.hash), int(params["nonce"]), int(tx["gas"]))


def send(
    w3: Web3,
    account: LocalAccount,
    fn: ContractFunction | ContractConstructor,
    contract: str,
    value: int = 0,
    max_fee_per_gas: int | None = None,
    max_priority_fee_per_gas: int | None = None,
    tip_ceiling: int = MAX_PRIORITY_FEE,
    *,
    gas: int | None = None,
    duty: bool = False,
) -> TxReceipt:
    """Sign (`build_signed`), send and wait for one contract transaction, at the fees `fees`
    allows.

    Args:
        w3: the client.
        account: the local signer (its key never leaves the process).
        fn: a bound contract function, e.g. ``contract.functions.deposit()``.
        contract: the contract's name, for error messages.
        value: wei sent along.
        max_fee_per_gas: the most a gas may cost (EIP-1559 ``maxFeePerGas``); web3's default
            (twice the latest base fee plus the tip) when None.
        max_priority_fee_per_gas: the tip; the RPC's suggestion (at most ``max_fee_per_gas``)
            when None.
        tip_ceiling: the most tip the transaction may pay (`MAX_PRIORITY_FEE` by default).
        gas: the gas limit to sign (a quote's); the estimate with a margin when None.
        duty: a daemon's duty: a `FeeTooHigh` is logged as an error (`fee_alarm`).

    Returns:
        The mined transaction's receipt (status 1).

    Raises:
        FeeTooHigh: the tip is above ``tip_ceiling`` (nothing is sent).
        ContractError: the call reverts (detected by gas estimation, before sending).
        InsufficientFundsError: the account cannot pay for it (at the estimate, or at the send:
            the signed limit is the estimate with a margin).
        TransactionFailed: it was mined but failed anyway.
    """
    with _sender(account.address):
        signed = build_signed(
            w3,
            account,
            fn,
            contract,
            value,
            max_fee_per_gas=max_fee_per_gas,
            max_priority_fee_per_gas=max_priority_fee_per_gas,
            tip_ceiling=tip_ceiling,
            gas=gas,
            duty=duty,
        )
        with _funds_named(w3, account.address, f"{contract}.{getattr(fn, 'fn_name', 'constructor')}"):
            tx_hash = w3.eth.send_raw_transaction(signed.raw)
        release_nonce(w3, account.address, signed.nonce, sent=True)  # held above a reserved one
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.05)
    if receipt["status"] != 1:
        raise TransactionFailed(
            f"{contract}.{getattr(fn, 'fn_name', 'constructor')} failed in block {receipt['blockNumber']} "
            f"(gas used {receipt['gasUsed']} of {signed.gas})",
            tx_hash.hex(),
        )
    return receipt


def gas_limit(estimate: int) -> int:
    """The gas limit a transaction is sent with for an ``estimate``: the estimate runs against the
    pending state and the mined block can differ (a later timestamp makes e.g. `lockStake` write a
    slot it skipped in the estimate), so a margin (`GAS_MARGIN_PCT`, within `TX_GAS_CAP`)."""
    return min(estimate * GAS_MARGIN_PCT // 100, max(estimate, TX_GAS_CAP))


def latest_base_fee(w3: Web3) -> int:
    """The latest block's base fee in wei (0 for a block without one: a pre-London chain)."""
    return int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)


def claim_fee_cap(w3: Web3, tip: int | None = None) -> int:
    """The fee cap a claim is sent with: the latest base fee after two of EIP-1559's largest rises
    (12.5 % a block) plus the tip (the RPC's suggestion by default). The claim's deposit covers its
    worst answer at this cap and is locked until the claim settles, so the cap is tighter than
    web3's default (twice the base fee), which locked twice the cover the contract asks; a claim
    whose block's base fee is past it is refused before it spends anything and tried again later."""
    return latest_base_fee(w3) * 81 // 64 + (int(w3.eth.max_priority_fee) if tip is None else tip)


MAX_GAP_FILL = 8
"""Most nonces `fill_nonce_gap` fills at once (a larger gap is no lag or lie of one answer: it is
logged and left to the operator)."""


def fill_nonce_gap(
    w3: Web3, account: LocalAccount, below: int, tip_ceiling: int = MAX_PRIORITY_FEE
) -> list[int]:
    """Fill the nonces under ``below`` that the RPC counts neither pending nor mined and this
    process does not hold (none of its transactions will ever take them) with 0-value transfers
    to itself, so that a transaction signed at ``below`` can be mined. Such a gap comes from one
    count that was too high when ``below`` was chosen (an RPC's lie, a backend on a branch later
    orphaned): without the filler the transaction stays queued for good. The caller holds
    `_sender` (``account.address``). Returns the nonces filled; a filler the pool refuses (the
    nonce got used meanwhile) is no error.
    """
    address = account.address
    checksum = Web3.to_checksum_address(address)
    mined, count = _counts(w3, address)
    with _HELD_LOCK:
        held = set(_held(w3, address, count))
        sent = _SENT.setdefault(address.lower(), {})
        now = time.monotonic()
        for nonce, at in list(sent.items()):
            if nonce < mined or now - at > SENT_MEMORY_S:
                del sent[nonce]
        held |= set(sent)  # sent and not yet mined: in a pool, whatever the RPC's count says
    gap = [n for n in range(count, below) if n not in held]
    if not gap:
        return []
    if len(gap) > MAX_GAP_FILL:
        log.error(
            "nonces %d..%d of %s: used by nothing, not filled (over %d)",
            count,
            below,
            address,
            MAX_GAP_FILL,
        )
        return []
    fee = fees(w3, tip_ceiling=tip_ceiling)
    for nonce in gap:
        filler = account.sign_transaction(
            {
                "to": checksum,
                "value": 0,
                "nonce": nonce,
                "chainId": chain_id(w3),
                "gas": 21_000,
                "maxFeePerGas": fee.max_fee_per_gas,
                "maxPriorityFeePerGas": fee.max_priority_fee_per_gas,
            }
        )
        try:
            w3.eth.send_raw_transaction(filler.raw_transaction)
        except Web3RPCError as exc:  # taken meanwhile ("nonce too low", "already known", underpriced)
            log.info("nonce %d of %s not filled: %s", nonce, address, exc)
    log.warning("filled nonces %s of %s: a count too high had left them unused", gap, address)
    return gap


def send_ether(
    w3: Web3, account: LocalAccount, to: str, amount: int, tip_ceiling: int = MAX_PRIORITY_FEE
) -> TxReceipt:
    """Send ``amount`` wei from ``account`` to ``to`` (a plain transfer) and wait for it, at the
    fees `fees` allows (`send`'s policy: a tip within ``tip_ceiling``, the pinned chain id)."""
    with _sender(account.address):
        fee = fees(w3, tip_ceiling=tip_ceiling)
        tx: TxParams = {
            "from": account.address,
            "to": Web3.to_checksum_address(to),
            "value": Wei(amount),
            "nonce": Nonce(next_nonce(w3, account.address)),
            "chainId": chain_id(w3),
            "gas": 21_000,
            "maxFeePerGas": Wei(fee.max_fee_per_gas),
            "maxPriorityFeePerGas": Wei(fee.max_priority_fee_per_gas),
        }
        signed = account.sign_transaction(dict(tx))  # type: ignore[arg-type]
        with _funds_named(w3, account.address, f"a transfer of {amount} wei to {to}"):
            tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        release_nonce(w3, account.address, int(tx["nonce"]), sent=True)  # held above a reserved one
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.05)
    if receipt["status"] != 1:
        raise TransactionFailed(f"transfer of {amount} wei to {to} failed", tx_hash.hex())
    return receipt


class Binding:
    """One deployed contract, bound to a client and (optionally) a signing account.

    Args:
        w3: the client.
        name: the contract's name (its generated ABI).
        address: where it is deployed.
        account: signer for transactions; None for read-only use.
        tip_ceiling: the most priority fee its transactions may pay (`send`).
        duty: its transactions are a daemon's duties (`fee_alarm` logs a refused one).
        answer_floor: the deployment's ``MIN_ANSWER_GAS_PRICE``, pinned (`Contracts.connect`
            takes it from the deployment file); None: read from the contract on first use, then
            pinned (not vouched for).
        floor_vouched: a given ``answer_floor`` is vouched for (the deployment file's or the
            caller's): `answer` tips it up to `MAX_ANSWER_FLOOR`; one that is not (read from the
            RPC, `Contracts.connect` for a file without it) is held to ``tip_ceiling``.
    """

    NAME: str = ""

    def __init__(
        self,
        w3: Web3,
        address: str,
        account: LocalAccount | None = None,
        name: str = "",
        tip_ceiling: int = MAX_PRIORITY_FEE,
        *,
        duty: bool = False,
        answer_floor: int | None = None,
        floor_vouched: bool = True,
    ) -> None:
        self.name = name or self.NAME
        self.w3 = w3
        self.account = account
        self.tip_ceiling = tip_ceiling
        self.duty = duty
        self._answer_floor = answer_floor
        self._floor_vouched = answer_floor is not None and floor_vouched
        self.contract: Contract = w3.eth.contract(
            address=Web3.to_checksum_address(address), abi=load_abi(self.name)
        )
        self.log_ranges = LogRanges()  # the width of a log query this RPC accepts, as learned

    @classmethod
    def at(cls, w3: Web3, name: str, address: str, account: LocalAccount | None = None) -> Binding:
        """A generic binding of contract ``name`` at ``address``."""
        return cls(w3, address, account, name=name)

    @property
    def address(self) -> str:
        """The contract's checksum address."""
        return str(self.contract.address)

    def with_account(self, account: LocalAccount) -> Any:
        """The same contract, signing with another account."""
        return type(self)(
            self.w3,
            self.address,
            account,
            name=self.name,
            tip_ceiling=self.tip_ceiling,
            duty=self.duty,
            answer_floor=self._answer_floor,
            floor_vouched=self._floor_vouched,
        )

    @property
    def answer_floor(self) -> int:
        """The deployment's answer gas price floor (``MIN_ANSWER_GAS_PRICE``) this binding pinned:
        the deployment file's, else the contract's read once (the RPC's word: `floor_vouched` is
        then False). A deployment parameter, never read per answer: the RPC would otherwise set
        the node's answer tip (up to `MAX_ANSWER_FLOOR`)."""
        if self._answer_floor is None:
            self._answer_floor = int(self.call("MIN_ANSWER_GAS_PRICE"))
        return self._answer_floor

    @property
    def floor_vouched(self) -> bool:
        """Whether `answer_floor` is vouched for (the deployment file's or the caller's), not only
        the RPC's answer: only a vouched floor may take an answer's tip past `tip_ceiling`."""
        return self._floor_vouched

    def logs(
        self,
        event: str,
        from_block: int,
        to_block: int | str = "latest",
        argument_filters: dict[str, Any] | None = None,
    ) -> list[EventData]:
        """The contract's ``event`` logs of a block range, in chain order, read in ranges the RPC
        accepts (`LogRanges`: a hosted RPC refuses a query over more than its cap of blocks).

        Raises:
            LogsUnreadable: a single block's query was refused or failed.
        """
        last = self.w3.eth.block_number if to_block == "latest" else int(to_block)
        return self.log_ranges.read(self._fetch(event, argument_filters), from_block, last)

    def last_logs(
        self,
        event: str,
        from_block: int,
        to_block: int | str = "latest",
        argument_filters: dict[str, Any] | None = None,
    ) -> list[EventData]:
        """The logs of ``event`` in the latest range, going back from ``to_block``, that holds any
        (`LogRanges.find_back`): an event looked for near the head, e.g. a recent batch's commit.

        Raises:
            LogsUnreadable: a single block's query was refused or failed.
        """
        last = self.w3.eth.block_number if to_block == "latest" else int(to_block)
        return self.log_ranges.find_back(self._fetch(event, argument_filters), from_block, last)

    def _fetch(self, event: str, argument_filters: dict[str, Any] | None) -> Fetch[EventData]:
        kind = self.contract.events[event]()

        def fetch(first: int, last: int) -> Sequence[EventData]:
            return kind.get_logs(from_block=first, to_block=last, argument_filters=argument_filters)

        return fetch

    def call(self, fn_name: str, *args: Any, block: int | None = None) -> Any:
        """Call a view function (at ``block``, default the latest); reverts raise the typed
        `ContractError`."""
        with reverts_as(self.name):
            fn = self.contract.functions[fn_name](*args)
            return fn.call() if block is None else fn.call(block_identifier=block)

    def transact(
        self,
        fn_name: str,
        *args: Any,
        value: int = 0,
        max_fee_per_gas: int | None = None,
        max_priority_fee_per_gas: int | None = None,
        tip_ceiling: int | None = None,
        quote: Quote | None = None,
    ) -> TxResult:
        """Send a transaction from the bound account; reverts raise the typed `ContractError`.
        ``tip_ceiling``: this transaction's, instead of the binding's. ``quote``: the `quote` a
        prompt showed: signed at its fees and its gas limit, so the most it showed is the most the
        transaction can cost (a quote's estimate that was low makes it fail within that, never
        cost more)."""
        if self.account is None:
            raise ContractError(f"{self.name}.{fn_name}: no account bound to sign the transaction")
        if quote is not None:
            max_fee_per_gas = quote.fees.max_fee_per_gas
            max_priority_fee_per_gas = quote.fees.max_priority_fee_per_gas
        fn = self.contract.functions[fn_name](*args)
        receipt = send(
            self.w3,
            self.account,
            fn,
            self.name,
            value,
            max_fee_per_gas,
            max_priority_fee_per_gas,
            tip_ceiling=self.tip_ceiling if tip_ceiling is None else tip_ceiling,
            gas=None if quote is None else quote.gas,
            duty=self.duty,
        )
        return TxResult(receipt)

    def quote(self, fn_name: str, *args: Any, value: int = 0) -> Quote:
        """What `transact` would send now: the fees (`fees`, within this binding's ceiling) and the
        gas limit, for a prompt to show the most it can cost; pass the quote on to `transact`
        (``quote=``) so that the transaction is signed at those fees and that gas limit. A revert
        or missing funds surface here.

        Raises:
            FeeTooHigh: the RPC's tip is above the ceiling.
            ContractError: the call reverts.
        """
        if self.account is None:
            raise ContractError(f"{self.name}.{fn_name}: no account bound to sign the transaction")
        fn = self.contract.functions[fn_name](*args)
        with reverts_as(self.name), _funds_named(self.w3, self.account.address, f"{self.name}.{fn_name}"):
            fee = fees(self.w3, tip_ceiling=self.tip_ceiling)
            estimate = fn.estimate_gas({"from": self.account.address, "value": Wei(value)})
        return Quote(fee, gas_limit(int(estimate)))

    def answer(self, fn_name: str, *args: Any) -> TxResult:
        """Send a data claim's answer (availability, omission, manifest). It is paid its gas at the
        block's answer gas price, the base fee or the deployment's ``MIN_ANSWER_GAS_PRICE`` where
        that is higher, and refused below it (`ClaimBond.costOfAnswer`). With no floor it goes at
        the RPC's fees (the node pays its tip, as any transaction); with one, its tip is the floor,
        so that it never pays less than it is paid at, and on the chains a floor is for (a base
        fee of 0 or next to it) no more either: a tip above the floor was the node's loss on every
        answer (tests/integration/test_review_answer_floor.py). The floor is the one pinned
        (`answer_floor`: the deployment file's), never an RPC's answer of the moment: an RPC
        answering 10,000 gwei per answer made the node tip that (tests/integration/
        test_review_fee_policy.py). Only a vouched floor (`floor_vouched`: the deployment file's
        or the caller's) may pass the binding's tip ceiling, up to `MAX_ANSWER_FLOOR`; one read
        from the RPC (a deployment file without ``minAnswerGasPrice``) is the RPC's word, held to
        the ceiling as any tip it suggests (tests/integration/test_review_signing_path.py).

        Raises:
            FeeTooHigh: the floor is above the ceiling (nothing is sent).
        """
        cap, tip, ceiling = self._answer_fees(fn_name)
        return self.transact(
            fn_name, *args, max_fee_per_gas=cap, max_priority_fee_per_gas=tip, tip_ceiling=ceiling
        )

    def sign_answer(self, fn_name: str, *args: Any) -> SignedTx:
        """`answer`'s transaction signed at the same fees, not sent: its nonce is reserved until it
        is broadcast (`resend.broadcast`), so that a daemon persists it first and then sends it
        again, or reprices it at its nonce (`resend.repriced`, within `answer_tip_ceiling`), until
        it lands, instead of waiting on it (supernet.node.service.answer_outbox).

        Raises:
            FeeTooHigh: as `answer`.
            ContractError: the answer reverts (gas estimation).
        """
        if self.account is None:
            raise ContractError(f"{self.name}.{fn_name}: no account bound to sign the transaction")
        cap, tip, ceiling = self._answer_fees(fn_name)
        fn = self.contract.functions[fn_name](*args)
        with _sender(self.account.address):
            return build_signed(
                self.w3,
                self.account,
                fn,
                self.name,
                max_fee_per_gas=cap,
                max_priority_fee_per_gas=tip,
                tip_ceiling=ceiling,
                duty=self.duty,
                reserve=True,
            )

    def answer_tip_ceiling(self, fn_name: str) -> int:
        """The most tip ``fn_name``'s answer may pay (its replacements' too): with a vouched floor
        (the deployment's, not an RPC's suggestion), up to what a deployment may set
        (`MAX_ANSWER_FLOOR`); else the binding's ceiling, as any tip an RPC suggests."""
        if self._held_floor(fn_name) == 0 or not self._floor_vouched:
            return self.tip_ceiling
        return max(self.tip_ceiling, MAX_ANSWER_FLOOR)

    def _answer_fees(self, fn_name: str) -> tuple[int | None, int | None, int]:
        """(fee cap, tip, tip ceiling) of an answer: the RPC's fees (None, None) without a floor;
        with one, a claim's cap with the floor as the tip."""
        floor = self._held_floor(fn_name)
        ceiling = self.answer_tip_ceiling(fn_name)
        if floor == 0:
            return None, None, ceiling
        return claim_fee_cap(self.w3, tip=floor), floor, ceiling

    def answer_fee_cap(self, fn_name: str) -> int:
        """The fee cap (wei per gas) `answer` signs ``fn_name``'s answer with at this moment: with a
        floor, a claim's cap with the floor as its tip; without, `fees`' default. What a wallet must
        hold per gas of the answer's limit (`supernet.node.service.wallet_float`).

        Raises:
            FeeTooHigh: as `answer` would (nothing could be sent).
        """
        floor = self._held_floor(fn_name)
        if floor == 0:
            return fees(self.w3, tip_ceiling=self.tip_ceiling).max_fee_per_gas
        return claim_fee_cap(self.w3, tip=floor)

    def _held_floor(self, fn_name: str) -> int:
        """`answer_floor`, refused above the tip ceiling where it is not vouched for (the RPC's
        word, held to the ceiling as any tip it suggests).

        Raises:
            FeeTooHigh: an unvouched floor above ``tip_ceiling`` (logged as an error for a duty).
        """
        floor = self.answer_floor
        if self._floor_vouched or floor <= self.tip_ceiling:
            return floor
        with fee_alarm(f"{self.name}.{fn_name}", self.duty):
            raise FeeTooHigh(
                floor,
                self.tip_ceiling,
                detail=(
                    f"the RPC reports an answer gas price floor (MIN_ANSWER_GAS_PRICE) of "
                    f"{_gwei(floor)} gwei, above the tip ceiling of {_gwei(self.tip_ceiling)} gwei: "
                    "nothing sent; the deployment file has no minAnswerGasPrice, so the floor is "
                    "only the RPC's word: add minAnswerGasPrice to the deployment file (or raise "
                    "the ceiling, or use another RPC)"
                ),
            )

    def claim(self, fn_name: str, *args: Any, bond: int, worst_gas: int) -> TxResult:
        """Open a data claim (availability, manifest, omission): its deposit is ``bond`` plus its
        costliest answer (``worst_gas``) at the answer gas price of the block it lands in: its base
        fee, or the deployment's ``MIN_ANSWER_GAS_PRICE`` where that is higher (the contracts'
        `ClaimBond`). That base fee is not known when the transaction is signed, so it is sent
        with a fee cap (at least the floor) and covers ``worst_gas`` at that cap: the block's price
        is at most the cap, and what the answer does not cost comes back when the claim settles.
        The tip is read once and held to the ceiling: the one in the deposit is the one signed.
        (A base fee the RPC inflates still inflates the deposit, a lock until the claim settles:
        a known limit, test_review_fee_policy.py.)

        An unvouched floor (`floor_vouched`: the RPC's word) is held to the tip ceiling too.

        Raises:
            FeeTooHigh: the RPC's tip, or an unvouched floor, is above the binding's ceiling
                (nothing is sent).
        """
        floor = self._held_floor(fn_name)
        with fee_alarm(f"{self.name}.{fn_name}", self.duty):
            tip = priority_fee(self.w3, self.tip_ceiling)
        cap = max(claim_fee_cap(self.w3, tip=tip), floor)
        return self.transact(
            fn_name, *args, value=bond + worst_gas * cap, max_fee_per_gas=cap, max_priority_fee_per_gas=tip
        )

    def events(self, tx: TxResult | TxReceipt, event_name: str) -> list[EventData]:
        """The ``event_name`` events this contract emitted in the transaction ``tx``."""
        receipt = tx.receipt if isinstance(tx, TxResult) else tx
        event = self.contract.events[event_name]()
        mine = [log for log in receipt["logs"] if log["address"] == self.contract.address]
        topic = bytes.fromhex(str(event.topic).removeprefix("0x"))
        return [event.process_log(log) for log in mine if log["topics"] and bytes(log["topics"][0]) == topic]


def deploy(w3: Web3, account: LocalAccount, name: str, *args: Any) -> tuple[str, TxReceipt]:
    """Deploy contract ``name`` with constructor ``args``; returns its address and the receipt."""
    factory = w3.eth.contract(abi=load_abi(name), bytecode=load_bytecode(name))
    receipt = send(w3, account, factory.constructor(*args), name)
    address = receipt["contractAddress"]
    if address is None:
        raise TransactionFailed(f"deploying {name} created no contract")
    return str(address), receipt
