// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ServiceManager} from "../src/ServiceManager.sol";

import {Base, Rejecter} from "./utils/Base.sol";

contract ServiceManagerTest is Base {
    /*//////////////////////////////////////////////////////////////
                         CONSTRUCTOR AND WIRING
    //////////////////////////////////////////////////////////////*/

    function test_Constructor_SetsParameters() public view {
        assertEq(sm.MIN_NODE_STAKE(), MIN_NODE_STAKE);
        assertEq(sm.MIN_VALIDATOR_STAKE(), MIN_VALIDATOR_STAKE);
        assertEq(sm.UNBONDING_PERIOD(), UNBONDING_PERIOD);
        assertEq(sm.MAX_MODELS(), MAX_MODELS);
        assertEq(sm.DEPLOYER(), address(this));
        assertEq(sm.taskManager(), address(tm));
    }

    function test_RevertWhen_ConstructorParameterInvalid() public {
        vm.expectRevert(ServiceManager.InvalidParameter.selector);
        new ServiceManager(0, 1, 1, 1);
        vm.expectRevert(ServiceManager.InvalidParameter.selector);
        new ServiceManager(1, 0, 1, 1);
        vm.expectRevert(ServiceManager.InvalidParameter.selector);
        new ServiceManager(1, 1, 1, 0);
        vm.expectRevert(ServiceManager.InvalidParameter.selector);
        new ServiceManager(1, 1, uint256(type(uint32).max) + 1, 1);
    }

    function test_SetTaskManager_EmitsOnce() public {
        ServiceManager fresh = new ServiceManager(1, 1, 1, 1);
        vm.expectEmit(address(fresh));
        emit ServiceManager.TaskManagerSet(address(tm));
        fresh.setTaskManager(address(tm));
        assertEq(fresh.taskManager(), address(tm));
    }

    function test_RevertWhen_SetTaskManagerNotDeployer() public {
        ServiceManager fresh = new ServiceManager(1, 1, 1, 1);
        vm.prank(stranger);
        vm.expectRevert(ServiceManager.OnlyDeployer.selector);
        fresh.setTaskManager(address(tm));
    }

    function test_RevertWhen_SetTaskManagerTwice() public {
        vm.expectRevert(ServiceManager.TaskManagerAlreadySet.selector);
        sm.setTaskManager(stranger);
    }

    function test_RevertWhen_SetTaskManagerZero() public {
        ServiceManager fresh = new ServiceManager(1, 1, 1, 1);
        vm.expectRevert(ServiceManager.ZeroAddress.selector);
        fresh.setTaskManager(address(0));
    }

    /*//////////////////////////////////////////////////////////////
                              REGISTRATION
    //////////////////////////////////////////////////////////////*/

    function test_RegisterNode() public {
        vm.deal(node, 2 ether);
        vm.expectEmit(address(sm));
        emit ServiceManager.NodeRegistered(node, ENDPOINT, _models(), 1 gwei, 2 ether);
        vm.prank(node, node);
        sm.registerNode{value: 2 ether}(ENDPOINT, _models(), 1 gwei);

        ServiceManager.NodeView memory v = sm.getNode(node);
        assertEq(v.node, node);
        assertEq(v.endpoint, ENDPOINT);
        assertEq(v.modelIds.length, 1);
        assertEq(v.modelIds[0], MODEL_ID);
        assertEq(v.pricePerToken, 1 gwei);
        assertEq(v.stake, 2 ether);
        assertTrue(v.registered);
        assertTrue(v.active);
        assertTrue(sm.isActiveNode(node));
        assertFalse(sm.isActiveValidator(node));
        assertEq(sm.nodeCount(), 1);
        assertEq(sm.nodeAt(0), node);
        assertEq(address(sm).balance, 2 ether);
    }

    function test_RevertWhen_RegisterNodeStakeTooLow() public {
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.InsufficientStake.selector, 0.5 ether, MIN_NODE_STAKE));
        sm.registerNode{value: 0.5 ether}(ENDPOINT, _models(), 1);
    }

    function test_RevertWhen_RegisterNodeTwice() public {
        _registerNode(node, 1 ether);
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.AlreadyRegistered.selector);
        sm.registerNode{value: 1 ether}(ENDPOINT, _models(), 1);
    }

    function test_RevertWhen_RegisterNodeAsValidator() public {
        _registerValidator(validator1, 1 ether);
        vm.prank(validator1);
        sm.deregister();
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(ServiceManager.RoleMismatch.selector);
        sm.registerNode{value: 1 ether}(ENDPOINT, _models(), 1);
    }

    function test_RevertWhen_RegisterNodeEndpointEmpty() public {
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.InvalidEndpoint.selector);
        sm.registerNode{value: 1 ether}("", _models(), 1);
    }

    function test_RevertWhen_RegisterNodeEndpointTooLong() public {
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.InvalidEndpoint.selector);
        sm.registerNode{value: 1 ether}(string(new bytes(257)), _models(), 1);
    }

    function test_RevertWhen_RegisterNodeTooManyModels() public {
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.TooManyModels.selector, 17, MAX_MODELS));
        sm.registerNode{value: 1 ether}(ENDPOINT, new bytes32[](17), 1);
    }

    function test_RegisterValidator() public {
        vm.deal(validator1, 3 ether);
        vm.expectEmit(address(sm));
        emit ServiceManager.ValidatorRegistered(validator1, 3 ether);
        vm.prank(validator1);
        sm.registerValidator{value: 3 ether}();
        assertTrue(sm.isActiveValidator(validator1));
        assertEq(sm.validatorStake(validator1), 3 ether);
        assertEq(sm.totalValidatorStake(), 3 ether);
        assertEq(sm.validatorCount(), 1);
        assertEq(sm.validatorAt(0), validator1);
        assertFalse(sm.getNode(validator1).registered);
    }

    function test_RevertWhen_RegisterValidatorStakeTooLow() public {
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(
            abi.encodeWithSelector(ServiceManager.InsufficientStake.selector, 0.1 ether, MIN_VALIDATOR_STAKE)
        );
        sm.registerValidator{value: 0.1 ether}();
    }

    function test_RevertWhen_RegisterValidatorTwice() public {
        _registerValidator(validator1, 1 ether);
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(ServiceManager.AlreadyRegistered.selector);
        sm.registerValidator{value: 1 ether}();
    }

    function test_RevertWhen_RegisterValidatorAsNode() public {
        _registerNode(node, 1 ether);
        vm.prank(node, node);
        sm.deregister();
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.RoleMismatch.selector);
        sm.registerValidator{value: 1 ether}();
    }

    function test_Reregister_AfterDeregister() public {
        _registerNode(node, 1 ether);
        vm.prank(node, node);
        sm.deregister();
        assertFalse(sm.isActiveNode(node));
        _registerNode(node, 1 ether);
        assertTrue(sm.isActiveNode(node));
        assertEq(sm.nodeCount(), 1, "listed once");
        ServiceManager.NodeView memory v = sm.getNode(node);
        assertEq(v.stake, 1 ether);
        assertEq(v.unbonding, 1 ether);
    }

    /*//////////////////////////////////////////////////////////////
                           STAKE AND DETAILS
    //////////////////////////////////////////////////////////////*/

    function test_AddStake_Node() public {
        _registerNode(node, 1 ether);
        vm.deal(node, 1 ether);
        vm.expectEmit(address(sm));
        emit ServiceManager.StakeAdded(node, 1 ether, 2 ether);
        vm.prank(node, node);
        sm.addStake{value: 1 ether}();
        assertEq(sm.getNode(node).stake, 2 ether);
        assertEq(sm.totalValidatorStake(), 0);
    }

    function test_AddStake_ValidatorRaisesTotal() public {
        _registerValidator(validator1, 1 ether);
        vm.deal(validator1, 2 ether);
        vm.prank(validator1);
        sm.addStake{value: 2 ether}();
        assertEq(sm.totalValidatorStake(), 3 ether);
        assertEq(sm.validatorStake(validator1), 3 ether);
    }

    function test_RevertWhen_AddStakeNotRegistered() public {
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(ServiceManager.NotRegistered.selector);
        sm.addStake{value: 1 ether}();
    }

    function test_RevertWhen_AddStakeZero() public {
        _registerNode(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.ZeroAmount.selector);
        sm.addStake();
    }

    function test_UpdateEndpointModelsPrice() public {
        _registerNode(node, 1 ether);
        bytes32[] memory ids = new bytes32[](2);
        ids[0] = bytes32(uint256(1));
        ids[1] = bytes32(uint256(2));

        vm.startPrank(node, node);
        vm.expectEmit(address(sm));
        emit ServiceManager.EndpointUpdated(node, "https://node.example");
        sm.updateEndpoint("https://node.example");
        vm.expectEmit(address(sm));
        emit ServiceManager.ModelsUpdated(node, ids);
        sm.updateModels(ids);
        vm.expectEmit(address(sm));
        emit ServiceManager.PriceUpdated(node, 7);
        sm.updatePrice(7);
        vm.stopPrank();

        ServiceManager.NodeView memory v = sm.getNode(node);
        assertEq(v.endpoint, "https://node.example");
        assertEq(v.modelIds.length, 2);
        assertEq(v.modelIds[1], ids[1]);
        assertEq(v.pricePerToken, 7);
    }

    function test_RevertWhen_UpdateByValidator() public {
        _registerValidator(validator1, 1 ether);
        vm.startPrank(validator1);
        vm.expectRevert(ServiceManager.NotANode.selector);
        sm.updateEndpoint("x");
        vm.expectRevert(ServiceManager.NotANode.selector);
        sm.updateModels(new bytes32[](0));
        vm.expectRevert(ServiceManager.NotANode.selector);
        sm.updatePrice(1);
        vm.stopPrank();
    }

    function test_RevertWhen_UpdateAfterDeregister() public {
        _registerNode(node, 1 ether);
        vm.startPrank(node, node);
        sm.deregister();
        vm.expectRevert(ServiceManager.NotRegistered.selector);
        sm.updateEndpoint("x");
        vm.expectRevert(ServiceManager.NotRegistered.selector);
        sm.updateModels(new bytes32[](0));
        vm.expectRevert(ServiceManager.NotRegistered.selector);
        sm.updatePrice(1);
        vm.stopPrank();
    }

    function test_RevertWhen_UpdateEndpointInvalid() public {
        _registerNode(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.InvalidEndpoint.selector);
        sm.updateEndpoint("");
    }

    function test_RevertWhen_UpdateModelsTooMany() public {
        _registerNode(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.TooManyModels.selector, 17, MAX_MODELS));
        sm.updateModels(new bytes32[](17));
    }

    /// A validator declares the models it checks (what clients read as coverage); a declaration
    /// replaces the last, is bounded like a node's list, and only a registered validator makes one.
    function test_DeclareCheckedModels_ByValidatorsOnly() public {
        bytes32[] memory ids = new bytes32[](2);
        ids[0] = bytes32(uint256(1));
        ids[1] = bytes32(uint256(2));
        _registerValidator(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectEmit(address(sm));
        emit ServiceManager.CheckedModelsDeclared(validator1, ids);
        sm.declareCheckedModels(ids);
        assertEq(sm.checkedModels(validator1).length, 2);
        assertEq(sm.checkedModels(validator1)[1], ids[1]);
        bytes32[] memory one = new bytes32[](1);
        one[0] = ids[0];
        vm.prank(validator1);
        sm.declareCheckedModels(one);
        assertEq(sm.checkedModels(validator1).length, 1, "replaced, not appended");

        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.TooManyModels.selector, 17, MAX_MODELS));
        sm.declareCheckedModels(new bytes32[](17));
        _registerNode(node, 1 ether);
        vm.prank(node);
        vm.expectRevert(ServiceManager.NotAValidator.selector); // a node cannot vouch for its own models
        sm.declareCheckedModels(ids);
        vm.prank(stranger);
        vm.expectRevert(ServiceManager.NotAValidator.selector);
        sm.declareCheckedModels(ids);
        assertEq(sm.checkedModels(node).length, 0);
    }

    /*//////////////////////////////////////////////////////////////
                               UNBONDING
    //////////////////////////////////////////////////////////////*/

    function test_RequestUnbond_MovesStake() public {
        _registerNode(node, 3 ether);
        uint64 readyAt = uint64(block.timestamp + UNBONDING_PERIOD);
        vm.expectEmit(address(sm));
        emit ServiceManager.UnbondRequested(node, 1 ether, 1 ether, readyAt);
        vm.prank(node, node);
        sm.requestUnbond(1 ether);
        ServiceManager.NodeView memory v = sm.getNode(node);
        assertEq(v.stake, 2 ether);
        assertEq(v.unbonding, 1 ether);
        assertEq(v.unbondingReadyAt, readyAt);
        assertTrue(v.active);

        vm.prank(node, node);
        sm.requestUnbond(1.5 ether);
        assertFalse(sm.isActiveNode(node), "below minimum => inactive");
        assertEq(sm.getNode(node).unbonding, 2.5 ether);
    }

    function test_RequestUnbond_ValidatorLowersTotal() public {
        _registerValidator(validator1, 3 ether);
        vm.prank(validator1);
        sm.requestUnbond(2 ether);
        assertEq(sm.totalValidatorStake(), 1 ether);
        vm.prank(validator1);
        sm.requestUnbond(1 ether);
        assertEq(sm.totalValidatorStake(), 0);
        assertFalse(sm.isActiveValidator(validator1));
    }

    function test_RevertWhen_RequestUnbondUnknown() public {
        vm.prank(stranger);
        vm.expectRevert(ServiceManager.NotRegistered.selector);
        sm.requestUnbond(1);
    }

    function test_RevertWhen_RequestUnbondZero() public {
        _registerNode(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.ZeroAmount.selector);
        sm.requestUnbond(0);
    }

    function test_RevertWhen_RequestUnbondTooMuch() public {
        _registerNode(node, 1 ether);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.AmountExceedsStake.selector, 2 ether, 1 ether));
        sm.requestUnbond(2 ether);
    }

    function test_RevertWhen_RequestUnbondLeavesValidatorBelowMinimum() public {
        _registerValidator(validator1, 1.5 ether);
        vm.prank(validator1);
        vm.expectRevert(
            abi.encodeWithSelector(ServiceManager.InsufficientStake.selector, 0.5 ether, MIN_VALIDATOR_STAKE)
        );
        sm.requestUnbond(1 ether);
    }

    function test_Deregister_Validator() public {
        _registerValidator(validator1, 2 ether);
        vm.expectEmit(address(sm));
        emit ServiceManager.Deregistered(validator1);
        vm.prank(validator1);
        sm.deregister();
        assertEq(sm.totalValidatorStake(), 0);
        assertFalse(sm.isActiveValidator(validator1));
        ServiceManager.Operator memory op = sm.getOperator(validator1);
        assertEq(op.unbonding, 2 ether);
        assertFalse(op.registered);
    }

    function test_RevertWhen_DeregisterNotRegistered() public {
        vm.prank(stranger);
        vm.expectRevert(ServiceManager.NotRegistered.selector);
        sm.deregister();
    }

    function test_WithdrawUnbonded() public {
        _registerNode(node, 2 ether);
        vm.prank(node, node);
        sm.requestUnbond(2 ether);
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        uint256 before = node.balance;
        vm.expectEmit(address(sm));
        emit ServiceManager.UnbondedWithdrawn(node, 2 ether);
        vm.prank(node, node);
        sm.withdrawUnbonded();
        assertEq(node.balance, before + 2 ether);
        assertEq(address(sm).balance, 0);
    }

    function test_RevertWhen_WithdrawUnbondedNothing() public {
        _registerNode(node, 2 ether);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.NothingToWithdraw.selector);
        sm.withdrawUnbonded();
    }

    function test_RevertWhen_WithdrawUnbondedTooEarly() public {
        _registerNode(node, 2 ether);
        vm.prank(node, node);
        sm.requestUnbond(1 ether);
        uint64 readyAt = uint64(block.timestamp + UNBONDING_PERIOD);
        vm.warp(readyAt - 1);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.UnbondingNotReady.selector, readyAt));
        sm.withdrawUnbonded();
    }

    function test_RevertWhen_WithdrawUnbondedFrozen() public {
        (uint256 challengeId,,) = _openChallenge();
        challengeId;
        vm.prank(node, node);
        sm.requestUnbond(2 ether);
        vm.warp(block.timestamp + UNBONDING_PERIOD + CHALLENGE_WINDOW);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, 1));
        sm.withdrawUnbonded();
    }

    function test_RevertWhen_WithdrawUnbondedLocked() public {
        ServiceManager shortSm = new ServiceManager(1 ether, 1 ether, 60, 16);
        shortSm.setTaskManager(address(this));
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        shortSm.registerNode{value: 1 ether}(ENDPOINT, _models(), 1);
        uint64 until = uint64(block.timestamp + 600);
        shortSm.lockStake(node, until);
        vm.prank(node, node);
        shortSm.requestUnbond(1 ether);
        vm.warp(block.timestamp + 60);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.StakeIsLocked.selector, until));
        shortSm.withdrawUnbonded();
        vm.warp(until);
        vm.prank(node, node);
        shortSm.withdrawUnbonded();
    }

    function test_RevertWhen_WithdrawUnbondedTransferFails() public {
        Rejecter r = new Rejecter();
        vm.deal(address(r), 1 ether);
        r.call(address(sm), 1 ether, abi.encodeCall(ServiceManager.registerValidator, ()));
        r.call(address(sm), 0, abi.encodeCall(ServiceManager.requestUnbond, (1 ether)));
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        r.setRejecting(true);
        vm.expectRevert(ServiceManager.TransferFailed.selector);
        r.call(address(sm), 0, abi.encodeCall(ServiceManager.withdrawUnbonded, ()));
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    function test_GetNodes_Pages() public {
        _registerNode(node, 1 ether);
        _registerNode(node2, 1 ether);
        address[] memory page = sm.getNodes(0, 10);
        assertEq(page.length, 2);
        assertEq(page[1], node2);
        page = sm.getNodes(1, 1);
        assertEq(page.length, 1);
        assertEq(page[0], node2);
        assertEq(sm.getNodes(5, 1).length, 0);
    }

    function test_RevertWhen_NodeAtOutOfRange() public {
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.IndexOutOfRange.selector, 0, 0));
        sm.nodeAt(0);
    }

    function test_RevertWhen_ValidatorAtOutOfRange() public {
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.IndexOutOfRange.selector, 3, 0));
        sm.validatorAt(3);
    }

    function test_GetNode_Unknown() public view {
        ServiceManager.NodeView memory v = sm.getNode(stranger);
        assertFalse(v.registered);
        assertFalse(v.active);
        assertEq(v.stake, 0);
        assertEq(sm.validatorStake(stranger), 0);
    }

    /*//////////////////////////////////////////////////////////////
                                  FUZZ
    //////////////////////////////////////////////////////////////*/

    function testFuzz_UnbondThenWithdraw(uint256 stake, uint256 amount, uint256 wait) public {
        stake = bound(stake, MIN_NODE_STAKE, 1_000 ether);
        amount = bound(amount, 1, stake);
        wait = bound(wait, 0, 2 * UNBONDING_PERIOD);
        _registerNode(node, stake);
        vm.prank(node, node);
        sm.requestUnbond(amount);
        assertEq(sm.isActiveNode(node), stake - amount >= MIN_NODE_STAKE);
        vm.warp(block.timestamp + wait);
        vm.prank(node, node);
        if (wait < UNBONDING_PERIOD) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    ServiceManager.UnbondingNotReady.selector, uint64(block.timestamp - wait + UNBONDING_PERIOD)
                )
            );
            sm.withdrawUnbonded();
        } else {
            sm.withdrawUnbonded();
            assertEq(node.balance, amount);
            assertEq(address(sm).balance, stake - amount);
        }
    }

    function testFuzz_ValidatorTotalTracksStake(uint256 a, uint256 b, uint256 add) public {
        a = bound(a, MIN_VALIDATOR_STAKE, 100 ether);
        b = bound(b, MIN_VALIDATOR_STAKE, 100 ether);
        add = bound(add, 1, 100 ether);
        _registerValidator(validator1, a);
        _registerValidator(validator2, b);
        vm.deal(validator1, add);
        vm.prank(validator1);
        sm.addStake{value: add}();
        assertEq(sm.totalValidatorStake(), a + b + add);
        vm.prank(validator2);
        sm.deregister();
        assertEq(sm.totalValidatorStake(), a + add);
    }
}

/// @notice The TaskManager-only hooks, with this test contract wired in as the TaskManager.
contract ServiceManagerHooksTest is Base {
    ServiceManager internal hooked;

    receive() external payable {}

    /// @dev This test stands in for `hooked`'s TaskManager, with no Payments behind it: a slash
    ///      takes stake only (nothing is held for the node anywhere).
    function PAYMENTS() external pure returns (address) {
        return address(0);
    }

    function setUp() public override {
        super.setUp();
        hooked = new ServiceManager(MIN_NODE_STAKE, MIN_VALIDATOR_STAKE, UNBONDING_PERIOD, MAX_MODELS);
        hooked.setTaskManager(address(this));
        vm.deal(node, 3 ether);
        vm.prank(node, node);
        hooked.registerNode{value: 3 ether}(ENDPOINT, _models(), 1);
    }

    function test_Slash_TakesStakeThenUnbonding() public {
        vm.prank(node, node);
        hooked.requestUnbond(2 ether);
        uint256 before = address(this).balance;
        vm.expectEmit(address(hooked));
        emit ServiceManager.Slashed(node, 1.5 ether, 1 ether, 0.5 ether);
        uint256 slashed = hooked.slash(node, 1.5 ether);
        assertEq(slashed, 1.5 ether);
        assertEq(address(this).balance, before + 1.5 ether);
        ServiceManager.NodeView memory v = hooked.getNode(node);
        assertEq(v.stake, 0);
        assertEq(v.unbonding, 1.5 ether);
        assertEq(v.slashCount, 1);
    }

    function test_Slash_CappedAtHoldings() public {
        uint256 slashed = hooked.slash(node, 10 ether);
        assertEq(slashed, 3 ether);
        assertEq(address(hooked).balance, 0);
        assertEq(hooked.slash(node, 1 ether), 0, "nothing left");
    }

    function test_Slash_ValidatorLowersTotal() public {
        vm.deal(validator1, 2 ether);
        vm.prank(validator1);
        hooked.registerValidator{value: 2 ether}();
        hooked.slash(validator1, 0.5 ether);
        assertEq(hooked.totalValidatorStake(), 1.5 ether);
    }

    function test_FreezeUnfreeze_Counts() public {
        vm.expectEmit(address(hooked));
        emit ServiceManager.Frozen(node, 1);
        hooked.freeze(node);
        hooked.freeze(node);
        assertEq(hooked.getNode(node).frozenCount, 2);
        vm.expectEmit(address(hooked));
        emit ServiceManager.Unfrozen(node, 1);
        hooked.unfreeze(node, 0);
        hooked.unfreeze(node, 0);
        assertEq(hooked.getNode(node).frozenCount, 0);
    }

    function test_RevertWhen_UnfreezeNotFrozen() public {
        vm.expectRevert(ServiceManager.NotFrozen.selector);
        hooked.unfreeze(node, 0);
    }

    function test_LockStake_NeverMovesBack() public {
        vm.expectEmit(address(hooked));
        emit ServiceManager.StakeLocked(node, 500);
        hooked.lockStake(node, 500);
        hooked.lockStake(node, 100);
        assertEq(hooked.getNode(node).lockedUntil, 500);
    }

    function test_LockActiveNode_LocksActiveNodesOnly() public {
        vm.expectEmit(address(hooked));
        emit ServiceManager.StakeLocked(node, 500);
        assertTrue(hooked.lockActiveNode(node, 500));
        assertTrue(hooked.lockActiveNode(node, 100), "still active; the lock does not move back");
        assertEq(hooked.getNode(node).lockedUntil, 500);

        // Not a node, unknown, or below the minimum stake: false and nothing locked.
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        hooked.registerValidator{value: 1 ether}();
        assertFalse(hooked.lockActiveNode(validator1, 900));
        assertEq(hooked.getOperator(validator1).lockedUntil, 0);
        assertFalse(hooked.lockActiveNode(stranger, 900));
        assertEq(hooked.getOperator(stranger).lockedUntil, 0);
        vm.prank(node, node);
        hooked.requestUnbond(2.5 ether);
        assertFalse(hooked.lockActiveNode(node, 900));
        assertEq(hooked.getNode(node).lockedUntil, 500);
    }

    function test_RevertWhen_LockActiveNodeCalledByOthers() public {
        vm.prank(stranger);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        hooked.lockActiveNode(node, 1);
        ServiceManager unwired = new ServiceManager(1, 1, 1, 1);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        unwired.lockActiveNode(node, 1);
    }

    function test_RevertWhen_HooksCalledByOthers() public {
        vm.startPrank(stranger);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        hooked.slash(node, 1);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        hooked.freeze(node);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        hooked.unfreeze(node, 0);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        hooked.lockStake(node, 1);
        vm.stopPrank();
    }

    function test_RevertWhen_HooksCalledBeforeWiring() public {
        ServiceManager unwired = new ServiceManager(1, 1, 1, 1);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        unwired.freeze(node);
    }

    function test_RevertWhen_SlashTransferFails() public {
        Rejecter r = new Rejecter();
        ServiceManager other = new ServiceManager(1, 1, 1, 1);
        other.setTaskManager(address(r));
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        other.registerNode{value: 1 ether}(ENDPOINT, _models(), 1);
        r.setRejecting(true);
        vm.expectRevert(ServiceManager.TransferFailed.selector);
        r.call(address(other), 0, abi.encodeCall(ServiceManager.slash, (node, 1)));
    }

    function testFuzz_SlashConservesEth(uint256 unbond, uint256 amount) public {
        unbond = bound(unbond, 0, 3 ether);
        amount = bound(amount, 0, 10 ether);
        if (unbond != 0) {
            vm.prank(node, node);
            hooked.requestUnbond(unbond);
        }
        uint256 slashed = hooked.slash(node, amount);
        assertEq(slashed, amount < 3 ether ? amount : 3 ether);
        ServiceManager.NodeView memory v = hooked.getNode(node);
        assertEq(v.stake + v.unbonding, 3 ether - slashed);
        assertEq(address(hooked).balance, v.stake + v.unbonding);
    }
}
