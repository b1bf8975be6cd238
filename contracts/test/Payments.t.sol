// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Payments} from "../src/Payments.sol";
import {ServiceManager} from "../src/ServiceManager.sol";
import {Confirmation, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {Base, Rejecter} from "./utils/Base.sol";

contract PaymentsTest is Base {
    /*//////////////////////////////////////////////////////////////
                          CONSTRUCTOR AND EIP-712
    //////////////////////////////////////////////////////////////*/

    function test_Constructor_SetsParameters() public view {
        assertEq(payments.WITHDRAWAL_DELAY(), WITHDRAWAL_DELAY);
        assertEq(payments.MAX_REDEEM_BATCH(), MAX_REDEEM_BATCH);
        assertEq(payments.VERIFICATION_SHARE_BPS(), VERIFICATION_SHARE_BPS);
        assertEq(payments.DECOY_BOUNTY(), DECOY_BOUNTY);
        assertEq(payments.DECOY_REBATE_BPS(), DECOY_REBATE_BPS);
    }

    /*//////////////////////////////////////////////////////////////
                            HELD EARNINGS
    //////////////////////////////////////////////////////////////*/

    /// @dev `node` redeems `amount` of `user`'s (deposited here), 80 % of it to its earnings.
    function _redeemAs(uint256 cumulative) internal {
        Voucher memory v = _voucher(user, node, cumulative);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        vm.prank(node, node);
        payments.redeem(packed);
    }

    /// @dev Request to its promise's latest due time, then to its last dispute's last verdict.
    function test_HoldCoversTheLastVerdictOfAPromisedReceipt() public view {
        assertEq(
            payments.holdPeriod(),
            payments.MAX_REQUEST_AHEAD() + om.MAX_PROMISE_DELAY() + tm.BATCH_RETENTION() + 2 * tm.VOTE_WINDOW()
        );
    }

    /// @dev Fees credited in hold period k are withdrawable from period k + 2, each credit on its
    ///      own: held between one and two periods, never less than one.
    function test_HeldEarningsFreePerPeriod() public {
        uint256 hold = payments.holdPeriod();
        vm.warp((block.timestamp / hold + 1) * hold + hold - 1); // the last second of period k
        _deposit(user, 1 ether);
        _redeemAs(0.5 ether); // 0.4 ether earned in period k
        vm.warp(block.timestamp + 1); // period k + 1
        _redeemAs(0.75 ether); // 0.2 ether more
        (uint256 held, uint256 freeAt) = payments.heldEarnings(node);
        assertEq(held, 0.6 ether);
        vm.warp(block.timestamp + hold - 1); // last second of k + 1: the first credit held one period
        (held,) = payments.heldEarnings(node);
        assertEq(held, 0.6 ether, "one second short of a period: all held");
        vm.warp(block.timestamp + 1); // period k + 2
        (held, freeAt) = payments.heldEarnings(node);
        assertEq(held, 0.2 ether, "the first credit is free, the second held");
        assertEq(freeAt, block.timestamp + hold);
        vm.prank(node, node);
        payments.withdrawEarnings();
        assertEq(node.balance, 0.4 ether);
        vm.warp(freeAt);
        vm.prank(node, node);
        payments.withdrawEarnings();
        assertEq(node.balance, 0.6 ether);
        (held, freeAt) = payments.heldEarnings(node);
        assertEq(held + freeAt, 0);
    }

    /// @dev A decoy's rebate comes from the escrow, after a verdict: it is not held.
    function test_RebateIsNotHeld() public {
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        payments.fundEscrow{value: 1 ether}(node);
        vm.prank(address(tm));
        (, uint256 rebate) = payments.payBounty(node);
        assertGt(rebate, 0);
        vm.prank(node, node);
        payments.withdrawEarnings();
        assertEq(node.balance, rebate);
    }

    /// @dev A slash past the node's stake and unbonding stake takes its held earnings (sent with
    ///      the rest to the slasher); earnings already past their hold are the node's.
    function test_SlashPastTheStakeTakesHeldEarnings() public {
        _registerNode(node, MIN_NODE_STAKE);
        _deposit(user, 2 ether);
        _redeemAs(1 ether); // 0.8 ether earned, released after the hold
        _pastHold(node);
        _redeemAs(2 ether); // 0.8 ether earned, held
        uint256 tmBefore = address(tm).balance;
        vm.expectEmit(address(payments));
        emit Payments.EarningsSeized(node, 0.5 ether);
        vm.prank(address(tm));
        uint256 slashed = sm.slash(node, MIN_NODE_STAKE + 0.5 ether);
        assertEq(slashed, MIN_NODE_STAKE + 0.5 ether, "the stake, then held earnings");
        assertEq(address(tm).balance - tmBefore, slashed, "all of it sent to the slasher");
        (uint256 held,) = payments.heldEarnings(node);
        assertEq(held, 0.3 ether);
        (uint256 earnings,) = payments.account(node);
        assertEq(earnings, 1.1 ether);
        vm.prank(address(tm));
        assertEq(sm.slash(node, 1 ether), 0.3 ether, "released earnings are never taken");
        vm.prank(node, node);
        payments.withdrawEarnings();
        assertEq(node.balance, 0.8 ether);
        assertEq(address(payments).balance, 0.4 ether, "the escrow only");
    }

    /// @dev A validator has no earnings here, and a slash it covers never calls Payments.
    function test_SlashWithinTheStakeTakesNoEarnings() public {
        _registerNode(node, MIN_NODE_STAKE);
        _deposit(user, 1 ether);
        _redeemAs(1 ether);
        vm.prank(address(tm));
        assertEq(sm.slash(node, MIN_NODE_STAKE / 2), MIN_NODE_STAKE / 2);
        (uint256 held,) = payments.heldEarnings(node);
        assertEq(held, 0.8 ether);
    }

    function test_RevertWhen_SeizedByAnyoneButTheServiceManager() public {
        _deposit(user, 1 ether);
        _redeemAs(1 ether);
        address[3] memory callers = [node, address(tm), stranger];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(Payments.OnlyServiceManager.selector);
            payments.seize(node, 1 ether);
        }
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        (bool ok,) = address(sm).call{value: 1 ether}("");
        assertFalse(ok, "the ServiceManager takes ether from Payments only");
        (uint256 held,) = payments.heldEarnings(node);
        assertEq(held, 0.8 ether);
    }

    function test_RevertWhen_RedeemBeforeWiring() public {
        Payments unwired =
            new Payments(WITHDRAWAL_DELAY, MAX_REDEEM_BATCH, VERIFICATION_SHARE_BPS, DECOY_BOUNTY, DECOY_REBATE_BPS);
        vm.deal(user, 1 ether);
        vm.prank(user);
        unwired.deposit{value: 1 ether}(node);
        vm.prank(node, node);
        vm.expectRevert(Payments.TaskManagerNotSet.selector);
        unwired.redeem(new bytes(96));
    }

    function test_RevertWhen_ConstructorParameterInvalid() public {
        vm.expectRevert(Payments.InvalidParameter.selector);
        new Payments(1, 0, 2_000, 1, 1);
        vm.expectRevert(Payments.InvalidParameter.selector);
        new Payments(uint256(type(uint32).max) + 1, 1, 2_000, 1, 1);
        vm.expectRevert(Payments.InvalidParameter.selector);
        new Payments(0, 1, 2_000, 1, 1); // the node must have time to redeem before a channel closes
        vm.expectRevert(Payments.InvalidParameter.selector);
        new Payments(1, 1, 0, 1, 1); // nothing would pay verification
        vm.expectRevert(Payments.InvalidParameter.selector);
        new Payments(1, 1, 5_001, 1, 1);
        vm.expectRevert(Payments.InvalidParameter.selector);
        new Payments(1, 1, 1, 0, 1); // no bounty
        vm.expectRevert(Payments.InvalidParameter.selector);
        new Payments(1, 1, 1, 1, 0); // no reason for a node to plant findable decoys
        vm.expectRevert(Payments.InvalidParameter.selector);
        new Payments(1, 1, 1, 1, 5_001);
        new Payments(1, 1, 5_000, 1, 5_000); // the bounds themselves are accepted
    }

    function _domainSeparator() internal view returns (bytes32) {
        return keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("Supernet"),
                keccak256("1"),
                block.chainid,
                address(payments)
            )
        );
    }

    function test_DomainSeparator_MatchesProtocol() public view {
        assertEq(payments.domainSeparator(), _domainSeparator());
    }

    function test_HashVoucher_MatchesProtocol() public view {
        Voucher memory v = _voucher(user, node, 1 ether);
        bytes32 structHash = keccak256(
            abi.encode(keccak256("Voucher(address user,address node,uint256 cumulativeAmount)"), user, node, 1 ether)
        );
        assertEq(payments.VOUCHER_TYPEHASH(), keccak256("Voucher(address user,address node,uint256 cumulativeAmount)"));
        assertEq(payments.hashVoucher(v), keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash)));
    }

    function test_HashTaskRequest_MatchesProtocol() public view {
        TaskRequest memory r = TaskRequest({
            user: user,
            node: node,
            modelId: MODEL_ID,
            agentHash: sha256("agent"),
            inputHash: sha256("input"),
            maxFee: 1e15,
            nonce: 7,
            deadline: 1_800_000_000
        });
        bytes32 typeHash = keccak256(
            "TaskRequest(address user,address node,bytes32 modelId,bytes32 agentHash,bytes32 inputHash,uint256 maxFee,uint256 nonce,uint256 deadline)"
        );
        bytes32 structHash = keccak256(
            abi.encode(typeHash, r.user, r.node, r.modelId, r.agentHash, r.inputHash, r.maxFee, r.nonce, r.deadline)
        );
        assertEq(payments.TASK_REQUEST_TYPEHASH(), typeHash);
        assertEq(payments.hashTaskRequest(r), keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash)));
    }

    function test_HashConfirmation_MatchesProtocol() public view {
        Confirmation memory c = Confirmation({requestHash: keccak256("req"), actionHash: sha256("action")});
        bytes32 typeHash = keccak256("Confirmation(bytes32 requestHash,bytes32 actionHash)");
        bytes32 structHash = keccak256(abi.encode(typeHash, c.requestHash, c.actionHash));
        assertEq(payments.CONFIRMATION_TYPEHASH(), typeHash);
        assertEq(payments.hashConfirmation(c), keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash)));
    }

    /*//////////////////////////////////////////////////////////////
                                DEPOSITS
    //////////////////////////////////////////////////////////////*/

    function _channel(address from, address to) internal view returns (uint256 deposited, uint256 redeemed) {
        (deposited, redeemed,) = payments.channel(from, to);
    }

    function _redeemed(address from, address to) internal view returns (uint256 redeemed) {
        (, redeemed) = _channel(from, to);
    }

    function test_Deposit_FundsOneChannel() public {
        vm.deal(user, 1 ether);
        vm.expectEmit(address(payments));
        emit Payments.Deposited(user, node, user, 1 ether);
        vm.prank(user);
        payments.deposit{value: 1 ether}(node);
        (uint256 deposited, uint256 redeemed) = _channel(user, node);
        assertEq(deposited, 1 ether);
        assertEq(redeemed, 0);
        (deposited,) = _channel(user, node2);
        assertEq(deposited, 0, "a channel pays one node only");
    }

    function test_DepositFor() public {
        address payer = makeAddr("payer");
        vm.deal(payer, 1 ether);
        vm.prank(payer);
        payments.depositFor{value: 1 ether}(user, node);
        (uint256 deposited,) = _channel(user, node);
        assertEq(deposited, 1 ether);
    }

    function test_RevertWhen_DepositZeroOrToNobody() public {
        vm.prank(user);
        vm.expectRevert(Payments.ZeroAmount.selector);
        payments.deposit(node);
        vm.deal(user, 1);
        vm.prank(user);
        vm.expectRevert(Payments.ZeroAddress.selector);
        payments.deposit{value: 1}(address(0));
        vm.expectRevert(Payments.ZeroAddress.selector);
        payments.depositFor{value: 1}(address(0), node);
    }

    function test_RevertWhen_DepositOverflowsTheChannel() public {
        _deposit(user, type(uint128).max);
        vm.deal(user, 1);
        vm.prank(user);
        vm.expectRevert(Payments.DepositTooLarge.selector);
        payments.deposit{value: 1}(node);
    }

    /// @dev The attack the per-node channels remove: one deposit promised to two nodes. Each
    ///      node can only be paid from the channel funded for it.
    function test_OneDepositCannotPayTwoNodes() public {
        _deposit(user, 1 ether);
        Voucher memory toNode2 = _voucher(user, node2, 1 ether);
        bytes memory sig = _signVoucher(userKey, toNode2);
        vm.prank(node2);
        assertEq(payments.redeem(_pack(toNode2, sig)), 0, "node2 has no channel from user");
        Voucher memory toNode = _voucher(user, node, 1 ether);
        bytes memory sig1 = _signVoucher(userKey, toNode);
        vm.prank(node, node);
        assertEq(payments.redeem(_pack(toNode, sig1)), 1 ether, "node is paid in full");
    }

    function test_RequestWithdrawal_NodeStillRedeemsDuringTheDelay() public {
        _deposit(user, 1 ether);
        uint256 readyAt = block.timestamp + WITHDRAWAL_DELAY;
        vm.expectEmit(address(payments));
        emit Payments.WithdrawalRequested(user, node, readyAt);
        vm.prank(user);
        payments.requestWithdrawal(node);
        (,, uint256 ready) = payments.channel(user, node);
        assertEq(ready, readyAt);
        Voucher memory v = _voucher(user, node, 0.4 ether);
        bytes memory sig = _signVoucher(userKey, v);
        vm.warp(readyAt - 1);
        vm.prank(node, node);
        assertEq(payments.redeem(_pack(v, sig)), 0.4 ether);
        vm.warp(readyAt);
        vm.expectEmit(address(payments));
        emit Payments.Withdrawn(user, node, 0.6 ether);
        vm.prank(user);
        payments.withdraw(node);
        assertEq(user.balance, 0.6 ether);
        (uint256 deposited, uint256 redeemed) = _channel(user, node);
        assertEq(deposited, redeemed, "a closed channel holds nothing");
        // a higher voucher signed earlier pays nothing now
        Voucher memory later = _voucher(user, node, 0.9 ether);
        bytes memory laterSig = _signVoucher(userKey, later);
        vm.prank(node, node);
        assertEq(payments.redeem(_pack(later, laterSig)), 0);
    }

    function test_RevertWhen_RequestWithdrawalTwiceOrEmpty() public {
        vm.prank(user);
        vm.expectRevert(Payments.NothingToWithdraw.selector);
        payments.requestWithdrawal(node);
        _deposit(user, 1 ether);
        vm.prank(user);
        payments.requestWithdrawal(node);
        vm.prank(user);
        vm.expectRevert(
            abi.encodeWithSelector(Payments.WithdrawalAlreadyRequested.selector, block.timestamp + WITHDRAWAL_DELAY)
        );
        payments.requestWithdrawal(node);
    }

    function test_CancelWithdrawal() public {
        _deposit(user, 1 ether);
        vm.prank(user);
        payments.requestWithdrawal(node);
        vm.expectEmit(address(payments));
        emit Payments.WithdrawalCancelled(user, node);
        vm.prank(user);
        payments.cancelWithdrawal(node);
        (,, uint256 ready) = payments.channel(user, node);
        assertEq(ready, 0);
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        vm.prank(user);
        vm.expectRevert(Payments.NoWithdrawalRequested.selector);
        payments.withdraw(node);
    }

    function test_RevertWhen_CancelWithdrawalNothing() public {
        vm.prank(user);
        vm.expectRevert(Payments.NoWithdrawalRequested.selector);
        payments.cancelWithdrawal(node);
    }

    function test_RevertWhen_WithdrawTooEarly() public {
        _deposit(user, 1 ether);
        vm.prank(user);
        payments.requestWithdrawal(node);
        vm.warp(block.timestamp + WITHDRAWAL_DELAY - 1);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(Payments.WithdrawalNotReady.selector, block.timestamp + 1));
        payments.withdraw(node);
    }

    function test_RevertWhen_WithdrawTransferFails() public {
        Rejecter r = new Rejecter();
        vm.deal(address(r), 1 ether);
        r.call(address(payments), 1 ether, abi.encodeCall(Payments.deposit, (node)));
        r.call(address(payments), 0, abi.encodeCall(Payments.requestWithdrawal, (node)));
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        r.setRejecting(true);
        vm.expectRevert(Payments.TransferFailed.selector);
        r.call(address(payments), 0, abi.encodeCall(Payments.withdraw, (node)));
    }

    /*//////////////////////////////////////////////////////////////
                               REDEMPTION
    //////////////////////////////////////////////////////////////*/

    function test_Redeem_SignedVoucher() public {
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 0.3 ether);
        vm.expectEmit(address(payments));
        emit Payments.Redeemed(node, 1, 0.3 ether, 0.06 ether);
        bytes memory sig = _signVoucher(userKey, v);
        vm.prank(node, node);
        uint256 total = payments.redeem(_pack(v, sig));
        assertEq(total, 0.3 ether);
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings, 0.24 ether, "the fee minus the verification share");
        assertEq(escrow, 0.06 ether, "VERIFICATION_SHARE_BPS of the fee");
        assertEq(_redeemed(user, node), 0.3 ether);

        // a later, higher voucher pays only the difference
        v = _voucher(user, node, 0.5 ether);
        bytes memory sig2 = _signVoucher(userKey, v);
        vm.prank(node, node);
        total = payments.redeem(_pack(v, sig2));
        assertEq(total, 0.2 ether);
        (earnings, escrow) = payments.account(node);
        assertEq(earnings + escrow, 0.5 ether);
        assertEq(_redeemed(user, node), 0.5 ether);

        // held until the disputes over what they paid are over ...
        (uint256 held, uint256 freeAt) = payments.heldEarnings(node);
        assertEq(held, 0.4 ether, "every redeemed fee is held");
        assertTrue(freeAt >= block.timestamp + payments.holdPeriod(), "held for at least the hold");
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.EarningsHeld.selector, held, freeAt));
        payments.withdrawEarnings();
        vm.warp(freeAt - 1);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.EarningsHeld.selector, held, freeAt));
        payments.withdrawEarnings();
        vm.warp(freeAt);
        // ... then the node pulls its earnings; the escrow stays
        vm.expectEmit(address(payments));
        emit Payments.EarningsWithdrawn(node, 0.4 ether);
        vm.prank(node, node);
        payments.withdrawEarnings();
        assertEq(node.balance, 0.4 ether);
        (earnings, escrow) = payments.account(node);
        assertEq(earnings, 0);
        assertEq(escrow, 0.1 ether);
        vm.prank(node, node);
        vm.expectRevert(Payments.NothingToWithdraw.selector);
        payments.withdrawEarnings();
    }

    /// @dev The escrow has no way out but decoy bounties through the TaskManager.
    function test_RevertWhen_EscrowTakenByAnyoneButTheTaskManager() public {
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        payments.fundEscrow{value: 1 ether}(node);
        (, uint256 escrow) = payments.account(node);
        assertEq(escrow, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(Payments.NothingToWithdraw.selector);
        payments.withdrawEarnings();
        for (uint256 i; i < 3; ++i) {
            address who = i == 0 ? node : i == 1 ? stranger : user;
            vm.prank(who);
            vm.expectRevert(Payments.OnlyTaskManager.selector);
            payments.payBounty(node);
        }
        vm.expectRevert(Payments.ZeroAmount.selector);
        payments.fundEscrow(node);
        vm.expectRevert(Payments.ZeroAddress.selector);
        payments.fundEscrow{value: 1}(address(0));
        assertEq(address(payments).balance, 1 ether);
    }

    /// @dev A bounty is DECOY_BOUNTY split into the validator's part and the node's rebate, and
    ///      never more than the escrow holds.
    function test_PayBounty_SplitsAndIsCappedByEscrow() public {
        vm.deal(address(this), 1 ether);
        payments.fundEscrow{value: DECOY_BOUNTY + 0.004 ether}(node);
        uint256 rebate = DECOY_BOUNTY * DECOY_REBATE_BPS / 10_000;
        vm.expectEmit(address(payments));
        emit Payments.BountyPaid(node, DECOY_BOUNTY - rebate, rebate);
        vm.prank(address(tm));
        (uint256 bounty, uint256 back) = payments.payBounty(node);
        assertEq(bounty, DECOY_BOUNTY - rebate);
        assertEq(back, rebate);
        assertEq(address(tm).balance, bounty, "the validator's part goes to the TaskManager");
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings, rebate);
        assertEq(escrow, 0.004 ether);
        vm.prank(address(tm));
        (bounty, back) = payments.payBounty(node);
        assertEq(bounty + back, 0.004 ether, "what is left, not more");
        vm.prank(address(tm));
        (bounty, back) = payments.payBounty(node);
        assertEq(bounty + back, 0, "an empty escrow pays nothing");
    }

    function testFuzz_RedeemSplitsExactly(uint96 fee) public {
        vm.assume(fee != 0);
        _deposit(user, fee);
        Voucher memory v = _voucher(user, node, fee);
        bytes memory sig = _signVoucher(userKey, v);
        vm.prank(node, node);
        payments.redeem(_pack(v, sig));
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings + escrow, fee, "no wei created or lost");
        assertEq(escrow, uint256(fee) * VERIFICATION_SHARE_BPS / 10_000);
    }

    function test_Redeem_ManyUsersInOneCall() public {
        _deposit(user, 1 ether);
        _deposit(user2, 1 ether);
        Voucher[] memory vs = new Voucher[](2);
        bytes[] memory sigs = new bytes[](2);
        vs[0] = _voucher(user, node, 0.1 ether);
        vs[1] = _voucher(user2, node, 0.2 ether);
        sigs[0] = _signVoucher(userKey, vs[0]);
        sigs[1] = _signVoucher(user2Key, vs[1]);
        vm.prank(node, node);
        assertEq(payments.redeem(_packAll(vs, sigs)), 0.3 ether);
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings + escrow, 0.3 ether);
        assertEq(_redeemed(user2, node), 0.2 ether);
    }

    function testFuzz_HashVoucher_MatchesProtocol(address from, address to, uint256 cumulative) public view {
        bytes32 structHash = keccak256(abi.encode(payments.VOUCHER_TYPEHASH(), from, to, cumulative));
        assertEq(
            payments.hashVoucher(_voucher(from, to, cumulative)),
            keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash))
        );
    }

    function test_Redeem_PartialWhenUnderfunded_RestLater() public {
        _deposit(user, 0.2 ether);
        Voucher memory v = _voucher(user, node, 0.5 ether);
        bytes memory sig = _signVoucher(userKey, v);
        vm.expectEmit(address(payments));
        emit Payments.Redeemed(node, 1, 0.2 ether, 0.04 ether);
        vm.prank(node, node);
        assertEq(payments.redeem(_pack(v, sig)), 0.2 ether);
        assertEq(_redeemed(user, node), 0.2 ether);

        _deposit(user, 1 ether);
        vm.prank(node, node);
        assertEq(payments.redeem(_pack(v, sig)), 0.3 ether, "same voucher pays the rest");
        (uint256 deposited, uint256 redeemed) = _channel(user, node);
        assertEq(redeemed, 0.5 ether);
        assertEq(deposited - redeemed, 0.7 ether);
    }

    function test_RevertWhen_RedeemReplayed() public {
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 0.3 ether);
        bytes memory sig = _signVoucher(userKey, v);
        vm.prank(node, node);
        payments.redeem(_pack(v, sig));
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user, 0.3 ether, 0.3 ether));
        payments.redeem(_pack(v, sig));
    }

    function test_RevertWhen_RedeemLowerAmount() public {
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 0.3 ether);
        bytes memory sig = _signVoucher(userKey, v);
        vm.prank(node, node);
        payments.redeem(_pack(v, sig));
        Voucher memory lower = _voucher(user, node, 0.1 ether);
        bytes memory lowerSig = _signVoucher(userKey, lower);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user, 0.1 ether, 0.3 ether));
        payments.redeem(_pack(lower, lowerSig));
    }

    function test_RevertWhen_RedeemEmpty() public {
        vm.prank(node, node);
        vm.expectRevert(Payments.EmptyBatch.selector);
        payments.redeem("");
    }

    function test_RevertWhen_RedeemTooMany() public {
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.BatchTooLarge.selector, 257, MAX_REDEEM_BATCH));
        payments.redeem(new bytes(257 * 96));
    }

    function test_RevertWhen_RedeemNotWholeRecords() public {
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.MalformedVouchers.selector, 95));
        payments.redeem(new bytes(95));
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.MalformedVouchers.selector, 97));
        payments.redeem(new bytes(97));
    }

    /// @dev The node is not in the packed record: a voucher signed for node2 and redeemed by
    ///      node is checked against node's own channel and domain, where its signature fails.
    function test_RevertWhen_RedeemOtherNodesVoucher() public {
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node2, 0.3 ether);
        bytes memory sig = _signVoucher(userKey, v);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        payments.redeem(_pack(v, sig));
    }

    /// @dev A malleable twin of a valid signature (s in the upper half, parity flipped) is refused.
    function test_RevertWhen_RedeemHighS() public {
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 0.3 ether);
        (bytes32 r, bytes32 vs) = _compact(_signVoucher(userKey, v));
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        uint256 s_ = uint256(vs) & ((1 << 255) - 1);
        uint256 parity = uint256(vs) >> 255;
        bytes32 twin = bytes32((n - s_) | ((1 - parity) << 255));
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        payments.redeem(abi.encodePacked(uint256(uint160(user)) << 96 | uint256(0.3 ether), r, twin));
    }

    /// @dev Only the TaskManager settles for a node: anyone else calling settle could make a node
    ///      redeem (and be paid) on someone else's schedule.
    function test_RevertWhen_SettleNotFromTaskManager() public {
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 0.3 ether);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        vm.prank(node, node);
        vm.expectRevert(Payments.OnlyTaskManager.selector);
        payments.settle(node, packed);
        vm.prank(stranger);
        vm.expectRevert(Payments.OnlyTaskManager.selector);
        payments.settle(node, packed);
    }

    function test_RevertWhen_SetTaskManagerTwiceOrByOthers() public {
        vm.prank(stranger);
        vm.expectRevert(Payments.OnlyDeployer.selector);
        payments.setTaskManager(stranger);
        vm.expectRevert(Payments.TaskManagerAlreadySet.selector);
        payments.setTaskManager(stranger);
    }

    function test_RevertWhen_RedeemSignedByOther() public {
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 0.3 ether);
        bytes memory sig = _signVoucher(user2Key, v);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        payments.redeem(_pack(v, sig));
    }

    function test_RevertWhen_RedeemMalformedSignature() public {
        _deposit(user, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        payments.redeem(abi.encodePacked(uint256(uint160(user)) << 96 | uint256(0.3 ether), new bytes(64)));
    }

    function test_RevertWhen_RedeemTamperedAmount() public {
        _deposit(user, 1 ether);
        bytes memory sig = _signVoucher(userKey, _voucher(user, node, 0.1 ether));
        Voucher[] memory vs = new Voucher[](2);
        bytes[] memory sigs = new bytes[](2);
        vs[0] = _voucher(user, node, 0.1 ether);
        vs[1] = _voucher(user2, node, 0.9 ether);
        sigs[0] = sig;
        sigs[1] = sig;
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 1));
        payments.redeem(_packAll(vs, sigs));
    }

    /// @dev A node that cannot take ether keeps its earnings (the withdrawal reverts as a whole),
    ///      and redeeming does not depend on it (nothing is sent in a redemption).
    function test_RevertWhen_EarningsPaymentFails() public {
        Rejecter r = new Rejecter();
        _depositTo(user, address(r), 1 ether);
        Voucher memory v = _voucher(user, address(r), 0.3 ether);
        r.setRejecting(true);
        r.call(address(payments), 0, abi.encodeCall(Payments.redeem, (_pack(v, _signVoucher(userKey, v)))));
        (uint256 earnings,) = payments.account(address(r));
        assertEq(earnings, 0.24 ether);
        _pastHold(address(r));
        vm.expectRevert(Payments.TransferFailed.selector);
        r.call(address(payments), 0, abi.encodeCall(Payments.withdrawEarnings, ()));
        (uint256 after_,) = payments.account(address(r));
        assertEq(after_, 0.24 ether, "nothing changed");
    }

    /*//////////////////////////////////////////////////////////////
                                  FUZZ
    //////////////////////////////////////////////////////////////*/

    function testFuzz_RedeemCumulative(uint256 funded, uint256 first, uint256 second, uint256 topUp) public {
        funded = bound(funded, 1, 100 ether);
        first = bound(first, 1, 200 ether);
        second = bound(second, first + 1, 300 ether);
        topUp = bound(topUp, 0, 100 ether);
        _deposit(user, funded);

        Voucher memory v1 = _voucher(user, node, first);
        bytes memory sig1 = _signVoucher(userKey, v1);
        vm.prank(node, node);
        uint256 paid1 = payments.redeem(_pack(v1, sig1));
        assertEq(paid1, first < funded ? first : funded);

        if (topUp != 0) _deposit(user, topUp);
        uint256 total = funded + topUp;
        Voucher memory v2 = _voucher(user, node, second);
        bytes memory sig2 = _signVoucher(userKey, v2);
        vm.prank(node, node);
        uint256 paid2 = payments.redeem(_pack(v2, sig2));
        uint256 totalPaid = second < total ? second : total;
        assertEq(paid1 + paid2, totalPaid);
        (uint256 deposited, uint256 redeemed) = _channel(user, node);
        assertEq(redeemed, totalPaid);
        assertEq(deposited, total);
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings + escrow, totalPaid);
        assertEq(address(payments).balance, deposited - redeemed + earnings + escrow);
    }

    function testFuzz_RevertWhen_SignerIsNotUser(uint256 key) public {
        key = bound(key, 1, 1e60);
        vm.assume(key != userKey);
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 1);
        bytes memory sig = signDigest(key, payments.hashVoucher(v));
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        payments.redeem(_pack(v, sig));
    }
}
