// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 15: held earnings in two slots (22d9e02). A node's money in Payments is now a hot slot
/// `NodeAccount {uint96 escrow, uint96 held, uint64 period}` written by every redemption and a cold
/// slot `NodeEarnings {uint128 free, uint120 previous, uint8 opened}` written when a hold period
/// rolls over (`_roll`, `_state`, `_credit`), on `withdrawEarnings`, `seize` and a decoy rebate
/// (`payBounty`); `fundEscrow` (anyone) sets `period` when it is 0 and `opened`. Looked for, as a
/// rational node, user, stranger or colluders: ether created or lost (Payments' balance against
/// every channel's `deposit - redeemed` and every node's `account()` earnings + escrow, across
/// redemptions, roll-overs of one and of many periods, withdrawals, seizures, bounties and anyone's
/// `fundEscrow`); held fees free early (period boundaries, a node that never funded its escrow so
/// its `period` is 0, a stranger's `fundEscrow` resetting or advancing the period, a roll skipped
/// because `moved` is false); a held wei the seizure cannot reach; the narrowed types (uint96
/// escrow and held, uint120 previous) overflowing and blocking a redemption or a verdict; the
/// views (`account`, `heldEarnings`) disagreeing with what `withdrawEarnings` pays.
///
/// Found:
/// - LOW (latent), FIXED (`fundEscrow` sets the period only while nothing is held). The `period == 0` sentinel ("never set", read by `fundEscrow`) is also a real
///   hold period: chain time below `holdPeriod`. A node that redeems in period 0 without having
///   funded its escrow has `{held: X, period: 0}`; a stranger's 1-wei `fundEscrow` in any later
///   period `p` stamps `period = p` without rolling, so X (credited in period 0, free from period
///   2) is re-dated to period `p` and held until `p + 2`, as long as the stranger likes (each
///   stranger call only works once, but the first can come arbitrarily late), breaking "nobody
///   but the node extends its hold" (Review14). Unreachable while chain time is unix time and
///   `holdPeriod` is days (it would need `holdPeriod` > ~54 years or a chain started at time 0),
///   hence LOW; the same shortcut would matter if the sentinel ever met a real period.
///   Root cause: Payments.sol `fundEscrow` (`if (hold != 0 && a.period == 0) a.period = ...`)
///   writes the period without the roll every other writer does. Fix by design: let `fundEscrow`
///   set the period only where nothing is held (`a.held == 0`), or roll there like `_credit`, or
///   store `period + 1` so that 0 never names a real period.
///   (test_defence_AStrangerCannotReDateFeesCreditedInPeriodZero)
///
/// Checked and holding:
/// - Conservation and the views, model-checked: a deterministic 90-step sequence over two nodes
///   (one funded at set-up, one never) of redemptions (channels covered in full and in part),
///   warps (one second, to a period's last and first second, one to three whole periods, random),
///   `withdrawEarnings`, `seize` of random amounts, `payBounty`, and `fundEscrow` by the node or a
///   stranger. After every step Payments' balance equals the channels' unredeemed deposits plus
///   every node's earnings and escrow; `heldEarnings` and `account` equal a model in which a fee
///   credited in period k is free from period k + 2 and seizure takes the previous period's fees
///   first; `withdrawEarnings` pays exactly the model's free amount or refuses with the model's
///   `EarningsHeld(held, freeAt)`; each seizure takes exactly what the model holds
///   (test_defence_ConservationAndViewsAcrossAModelCheckedSequence).
/// - Period boundaries: a credit in the last second of period k and one in the first second of k+1
///   are held until the starts of k+2 and k+3; a roll across two or more periods frees both
///   buckets, a roll across one moves the current one to previous (read, then written, by
///   seize/withdraw at the boundary second) (test_defence_BoundarySecondsAndMultiPeriodRolls).
/// - A stranger's `fundEscrow` on a node that never funded its escrow, before and after its first
///   redemption, at the last second of a period: the period is set only while it is 0 and nothing
///   is held (at unix time), never re-dates a held fee, and `freeAt` stays
///   (test_defence_AStrangersFundEscrowNeverMovesAHeldFee).
/// - Seizure reaches every held wei, including the previous bucket after a roll the storage has
///   not seen yet (`_state` rolls in memory and writes), and a rolled-over current bucket; nothing
///   free is taken (test_defence_SeizureReachesEveryHeldWeiAfterAnUnwrittenRoll).
/// - uint120 `previous` and uint128 `free`: `previous` only ever receives a uint96 `held`, and
///   `free += previous + held` stays below 2**97 per roll; both are far past the ether in existence.
///   Read, no test.
/// - Known limit: the escrow is now uint96 (7.9e10 ether, it was uint128): anyone filling a node's
///   escrow to the cap blocks its redemptions (AccountOverflow on the escrow share), and so any
///   `commit` carrying vouchers; it costs the griefer > 7.9e10 ether locked for good, ~650 times
///   the ether in existence (test_known_limit_FillingTheEscrowToItsUint96CapCostsMoreThanAllEther).
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

import {Payments} from "../src/Payments.sol";
import {Voucher} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";

contract Review15Test is Base {
    uint256 internal hold;

    // model, per node index (0: `node`, funded at set-up; 1: `node2`, never funded by itself)
    address[2] internal nodes;
    uint256[2] internal cumulative; // `user`'s voucher total to each node
    uint256[2] internal mFree;
    uint256[2] internal mEscrow;
    mapping(uint256 => mapping(uint256 => uint256)) internal mHeld; // node index => period => fees
    mapping(uint256 => uint256[]) internal mPeriods; // node index => periods credited (for maturing)
    uint256 internal seed;

    function setUp() public override {
        super.setUp();
        hold = payments.holdPeriod();
        nodes = [node, node2];
    }

    /*//////////////////////////////////////////////////////////////
                                HELPERS
    //////////////////////////////////////////////////////////////*/

    function _rand(uint256 bound) internal returns (uint256) {
        seed = uint256(keccak256(abi.encode(seed)));
        return seed % bound;
    }

    function _period() internal view returns (uint256) {
        return block.timestamp / hold;
    }

    /// @dev `user` pays node `i` `amount` (deposits `depositShare` of it), the node redeems the
    ///      voucher for its whole running total; returns what the redemption paid.
    function _redeem(uint256 i, uint256 amount, bool partialCover) internal returns (uint256 paid) {
        address who = nodes[i];
        uint256 dep = partialCover ? amount / 2 : amount;
        if (dep != 0) _depositTo(user, who, dep);
        cumulative[i] += amount;
        Voucher memory v = _voucher(user, who, cumulative[i]);
        (, uint256 before,) = payments.channel(user, who);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        vm.prank(who, who);
        payments.redeem(packed);
        (, uint256 after_,) = payments.channel(user, who);
        paid = after_ - before;
    }

    /// @dev The model's credit of a redemption of `paid` to node `i` now.
    function _modelCredit(uint256 i, uint256 paid) internal {
        uint256 toEscrow = paid * VERIFICATION_SHARE_BPS / 10_000;
        mEscrow[i] += toEscrow;
        uint256 p = _period();
        if (mHeld[i][p] == 0) mPeriods[i].push(p);
        mHeld[i][p] += paid - toEscrow;
    }

    /// @dev Moves every model credit of node `i` from period <= now - 2 to free.
    function _mature(uint256 i) internal {
        uint256 p = _period();
        uint256[] storage ps = mPeriods[i];
        for (uint256 j; j < ps.length;) {
            if (ps[j] + 2 <= p) {
                mFree[i] += mHeld[i][ps[j]];
                mHeld[i][ps[j]] = 0;
                ps[j] = ps[ps.length - 1];
                ps.pop();
            } else {
                ++j;
            }
        }
    }

    function _modelHeld(uint256 i) internal returns (uint256 held, uint256 freeAt) {
        _mature(i);
        uint256 p = _period();
        uint256 cur = mHeld[i][p];
        uint256 prev = mHeld[i][p - 1];
        held = cur + prev;
        if (cur != 0) freeAt = (p + 2) * hold;
        else if (prev != 0) freeAt = (p + 1) * hold;
    }

    /// @dev Views against the model, and the balance against the ledger.
    function _check(string memory step) internal {
        uint256 ledger;
        for (uint256 i; i < 2; ++i) {
            (uint256 held, uint256 freeAt) = _modelHeld(i);
            (uint256 h, uint256 f) = payments.heldEarnings(nodes[i]);
            assertEq(h, held, string.concat(step, ": heldEarnings.held"));
            assertEq(f, freeAt, string.concat(step, ": heldEarnings.freeAt"));
            (uint256 earnings, uint256 escrow) = payments.account(nodes[i]);
            assertEq(earnings, mFree[i] + held, string.concat(step, ": account.earnings"));
            assertEq(escrow, mEscrow[i], string.concat(step, ": account.escrow"));
            (uint256 deposited, uint256 redeemed,) = payments.channel(user, nodes[i]);
            ledger += deposited - redeemed + earnings + escrow;
        }
        assertEq(address(payments).balance, ledger, string.concat(step, ": conservation"));
    }

    function _withdrawChecked(uint256 i) internal {
        address who = nodes[i];
        (uint256 held, uint256 freeAt) = _modelHeld(i);
        uint256 free = mFree[i];
        if (free == 0) {
            if (held != 0) vm.expectRevert(abi.encodeWithSelector(Payments.EarningsHeld.selector, held, freeAt));
            else vm.expectRevert(Payments.NothingToWithdraw.selector);
            vm.prank(who, who);
            payments.withdrawEarnings();
            return;
        }
        uint256 before = who.balance;
        vm.prank(who, who);
        payments.withdrawEarnings();
        assertEq(who.balance - before, free, "withdrawEarnings pays the model's free amount");
        mFree[i] = 0;
    }

    function _seizeChecked(uint256 i, uint256 amount) internal {
        _mature(i);
        uint256 p = _period();
        uint256 fromPrev = amount < mHeld[i][p - 1] ? amount : mHeld[i][p - 1];
        uint256 rest = amount - fromPrev;
        uint256 fromCur = rest < mHeld[i][p] ? rest : mHeld[i][p];
        mHeld[i][p - 1] -= fromPrev;
        mHeld[i][p] -= fromCur;
        uint256 before = address(sm).balance;
        vm.prank(address(sm));
        uint256 taken = payments.seize(nodes[i], amount);
        assertEq(taken, fromPrev + fromCur, "seize takes what the model holds");
        assertEq(address(sm).balance - before, taken, "and sends it");
    }

    function _bountyChecked(uint256 i) internal {
        uint256 taken = DECOY_BOUNTY < mEscrow[i] ? DECOY_BOUNTY : mEscrow[i];
        uint256 rebate = taken * DECOY_REBATE_BPS / 10_000;
        vm.prank(address(tm));
        (uint256 bounty, uint256 r) = payments.payBounty(nodes[i]);
        assertEq(r, rebate, "rebate");
        assertEq(bounty, taken - rebate, "bounty");
        mEscrow[i] -= taken;
        mFree[i] += rebate;
    }

    function _fundChecked(uint256 i, address funder, uint256 amount) internal {
        vm.deal(funder, funder.balance + amount);
        vm.prank(funder);
        payments.fundEscrow{value: amount}(nodes[i]);
        mEscrow[i] += amount;
    }

    function _warpChecked(uint256 kind) internal {
        uint256 t = block.timestamp;
        if (kind == 0) vm.warp(t + 1);
        else if (kind == 1) vm.warp((t / hold + 1) * hold - 1); // last second of this period
        else if (kind == 2) vm.warp((t / hold + 1) * hold); // first second of the next
        else if (kind == 3) vm.warp(t + hold * (1 + _rand(3)));
        else vm.warp(t + _rand(hold));
    }

    /*//////////////////////////////////////////////////////////////
                 1. CONSERVATION AND VIEWS, MODEL-CHECKED
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. A deterministic 90-step mix of every operation on two nodes (one funded
    ///         its escrow at set-up, one never did); after each, conservation and the views against
    ///         a per-period model, and every withdrawal and seizure pays exactly the model's amount.
    function test_defence_ConservationAndViewsAcrossAModelCheckedSequence() public {
        seed = 15;
        _fundChecked(0, node, 1); // node registers as the SDK does; node2 never funds
        _check("setup");
        for (uint256 s; s < 90; ++s) {
            uint256 i = _rand(2);
            uint256 op = _rand(10);
            string memory step = string.concat("step ", Strings.toString(s), " op ", Strings.toString(op));
            if (op < 3) {
                uint256 paid = _redeem(i, 1e15 + _rand(1 ether), _rand(3) == 0);
                _modelCredit(i, paid);
            } else if (op < 6) {
                _warpChecked(_rand(5));
            } else if (op == 6) {
                _withdrawChecked(i);
            } else if (op == 7) {
                _seizeChecked(i, _rand(2) == 0 ? _rand(1 ether) : type(uint256).max);
            } else if (op == 8) {
                _bountyChecked(i);
            } else {
                _fundChecked(i, _rand(2) == 0 ? stranger : nodes[i], 1 + _rand(0.1 ether));
            }
            _check(step);
        }
        // everything eventually free, and paid out exactly
        vm.warp(block.timestamp + 2 * hold);
        _withdrawChecked(0);
        _withdrawChecked(1);
        _check("end");
        (uint256 e0,) = payments.account(node);
        (uint256 e1,) = payments.account(node2);
        assertEq(e0 + e1, 0, "nothing left but the escrows and the channels");
    }

    /*//////////////////////////////////////////////////////////////
                      2. BOUNDARIES AND MULTI-PERIOD ROLLS
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (fees free early at a boundary). Credits in the last second of k and the
    ///         first of k+1; seizure and withdrawal at k+2's first second find exactly k+1's fees
    ///         held; a roll straight from k+1 to k+4 frees everything.
    function test_defence_BoundarySecondsAndMultiPeriodRolls() public {
        _fundChecked(0, node, 1);
        vm.warp((_period() + 1) * hold - 1); // last second of k
        _modelCredit(0, _redeem(0, 1 ether, false));
        vm.warp(block.timestamp + 1); // first second of k + 1
        _modelCredit(0, _redeem(0, 0.5 ether, false));
        _check("k+1");
        vm.warp(block.timestamp + hold - 1); // last second of k + 1: everything held
        _withdrawChecked(0);
        _check("last second of k+1");
        vm.warp(block.timestamp + 1); // first second of k + 2: k's fees free, k+1's held
        (uint256 held, uint256 freeAt) = payments.heldEarnings(node);
        assertEq(held, 0.4 ether);
        assertEq(freeAt, block.timestamp + hold);
        _seizeChecked(0, 0.1 ether); // from the rolled-over (unwritten) previous bucket
        _withdrawChecked(0);
        _check("k+2");
        // a credit at k+2, then nothing until k+5: a roll over three periods frees it all
        _modelCredit(0, _redeem(0, 1 ether, false));
        vm.warp(block.timestamp + 3 * hold);
        _seizeChecked(0, type(uint256).max); // nothing held: takes 0
        _check("k+5");
        _withdrawChecked(0);
        _check("k+5 withdrawn");
    }

    /*//////////////////////////////////////////////////////////////
                 3. A STRANGER'S fundEscrow AND THE PERIOD
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (griefer extending or shortening a hold). node2 never funded its escrow. A
    ///         stranger funds it before its first redemption, then again in the last second before
    ///         its fees free; neither moves `freeAt` nor any held wei.
    function test_defence_AStrangersFundEscrowNeverMovesAHeldFee() public {
        _fundChecked(1, stranger, 1); // sets node2's period to now: nothing held, nothing moves
        vm.warp(block.timestamp + 5 * hold + 7);
        _modelCredit(1, _redeem(1, 1 ether, false)); // first redemption, periods later
        _check("first redemption");
        (, uint256 freeAt) = payments.heldEarnings(node2);
        vm.warp(freeAt - 1);
        _fundChecked(1, stranger, 1);
        _check("stranger at the last second");
        (, uint256 freeAtAfter) = payments.heldEarnings(node2);
        assertEq(freeAtAfter, freeAt);
        vm.warp(freeAt);
        _withdrawChecked(1);
        _check("withdrawn at freeAt");
        assertEq(node2.balance, 0.8 ether);
    }

    /// @notice Attack (LOW, latent: chain time below holdPeriod). The 0 that means "period never
    ///         set" is also period 0. node2 redeems in period 0 without having funded its escrow;
    ///         five periods later (its fees free since period 2) a stranger funds its escrow with 1
    ///         wei: `fundEscrow` stamps period 5 over the held fees without rolling them. SAFE: the
    ///         fees credited in period 0 stay free; a stranger's deposit to the escrow moves no
    ///         fee's hold. Today: 0.8 ether is held again until period 7.
    function test_defence_AStrangerCannotReDateFeesCreditedInPeriodZero() public {
        vm.warp(1000); // a chain whose time is below the hold (period 0)
        assertEq(_period(), 0);
        _redeem(1, 1 ether, false); // credited in period 0: free from 2 * hold
        (uint256 held, uint256 freeAt) = payments.heldEarnings(node2);
        assertEq(held, 0.8 ether);
        assertEq(freeAt, 2 * hold);

        vm.warp(5 * hold + 1); // long free
        vm.deal(stranger, 1);
        vm.prank(stranger);
        payments.fundEscrow{value: 1}(node2);

        (held, freeAt) = payments.heldEarnings(node2);
        assertEq(held, 0, "fees credited in period 0 are free in period 5");
        vm.prank(node2, node2);
        payments.withdrawEarnings();
        assertEq(node2.balance, 0.8 ether);
    }

    /*//////////////////////////////////////////////////////////////
                    4. SEIZURE AFTER AN UNWRITTEN ROLL
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (a held wei out of the seizure's reach). Fees in k-1 and k, nothing written
    ///         since; at k+1 the k fees sit in `held` with a stale `period` (storage still says k)
    ///         and k-1's are free: a seizure of everything takes exactly k's fees; the free ones
    ///         stay and withdraw; a second seizure takes nothing.
    function test_defence_SeizureReachesEveryHeldWeiAfterAnUnwrittenRoll() public {
        _fundChecked(0, node, 1);
        _modelCredit(0, _redeem(0, 1 ether, true)); // partly covered: 0.5 ether paid
        vm.warp((_period() + 1) * hold);
        _modelCredit(0, _redeem(0, 1 ether, false)); // pays 1 ether (the rest of the first voucher and half of this one)
        vm.warp(block.timestamp + hold);
        _check("k+1");
        _seizeChecked(0, type(uint256).max);
        _seizeChecked(0, type(uint256).max);
        _check("seized");
        (uint256 held,) = payments.heldEarnings(node);
        assertEq(held, 0);
        _withdrawChecked(0);
        _check("withdrawn");
        assertEq(node.balance, 0.4 ether, "the free k-1 fees only");
    }

    /*//////////////////////////////////////////////////////////////
                        5. THE NARROWED ESCROW
    //////////////////////////////////////////////////////////////*/

    /// @notice Known limit (by design of the one-slot account: a uint96 escrow). Anyone may fund
    ///         a node's escrow; funding it to 2**96 - 1 makes the escrow share of every later
    ///         redemption overflow, so the node's vouchers (and a commit carrying them) revert.
    ///         The griefer locks 7.9e10 ether for good, far more than all ether in existence
    ///         (~1.2e8), so this is out of reach on an ether-gas chain; a chain whose gas token has
    ///         a larger supply in 18 decimals would need a uint128 escrow again (or a cap on
    ///         what `fundEscrow` accepts from others).
    function test_known_limit_FillingTheEscrowToItsUint96CapCostsMoreThanAllEther() public {
        uint256 cost = type(uint96).max;
        assertGt(cost, 1e10 ether); // more than 650 times the ether supply
        vm.deal(stranger, cost);
        vm.prank(stranger);
        payments.fundEscrow{value: cost}(node);
        _depositTo(user, node, 1 ether);
        Voucher memory v = _voucher(user, node, 1 ether);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        vm.prank(node, node);
        vm.expectRevert(Payments.AccountOverflow.selector);
        payments.redeem(packed);
    }
}
