// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ModelRegistry} from "../src/ModelRegistry.sol";

import {Base} from "./utils/Base.sol";

contract ModelRegistryTest is Base {
    string internal constant CID = "bafkreimanifest";

    function test_RegisterModel() public {
        vm.expectEmit(address(registry));
        emit ModelRegistry.ModelRegistered(MODEL_ID, stranger, CID, "SmolLM2-135M-Instruct");
        vm.prank(stranger);
        registry.registerModel(MODEL_ID, CID, "SmolLM2-135M-Instruct");

        ModelRegistry.Model memory m = registry.getModel(MODEL_ID);
        assertEq(m.manifestCid, CID);
        assertEq(m.name, "SmolLM2-135M-Instruct");
        assertEq(m.publisher, stranger);
        assertEq(m.registeredAt, block.timestamp);
        assertTrue(registry.isRegistered(MODEL_ID));
        assertEq(registry.modelCount(), 1);
        assertEq(registry.modelAt(0), MODEL_ID);
    }

    function test_RevertWhen_RegisterModelDuplicate() public {
        registry.registerModel(MODEL_ID, CID, "a");
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelAlreadyRegistered.selector, MODEL_ID));
        registry.registerModel(MODEL_ID, "bafkreiother", "b");
    }

    function test_RevertWhen_RegisterModelZeroId() public {
        vm.expectRevert(ModelRegistry.ZeroModelId.selector);
        registry.registerModel(bytes32(0), CID, "a");
    }

    function test_RevertWhen_RegisterModelEmptyCid() public {
        vm.expectRevert(ModelRegistry.InvalidManifestCid.selector);
        registry.registerModel(MODEL_ID, "", "a");
    }

    function test_RevertWhen_RegisterModelCidTooLong() public {
        vm.expectRevert(ModelRegistry.InvalidManifestCid.selector);
        registry.registerModel(MODEL_ID, string(new bytes(257)), "a");
    }

    function test_RevertWhen_RegisterModelNameTooLong() public {
        vm.expectRevert(ModelRegistry.InvalidName.selector);
        registry.registerModel(MODEL_ID, CID, string(new bytes(257)));
    }

    function test_RevertWhen_GetModelUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, MODEL_ID));
        registry.getModel(MODEL_ID);
    }

    function test_RevertWhen_ModelAtOutOfRange() public {
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.IndexOutOfRange.selector, 0, 0));
        registry.modelAt(0);
    }

    function testFuzz_RegisterModel(bytes32 id, string calldata cid, string calldata name) public {
        vm.assume(id != bytes32(0));
        vm.assume(bytes(cid).length != 0 && bytes(cid).length <= 256 && bytes(name).length <= 256);
        registry.registerModel(id, cid, name);
        ModelRegistry.Model memory m = registry.getModel(id);
        assertEq(m.manifestCid, cid);
        assertEq(m.name, name);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelAlreadyRegistered.selector, id));
        registry.registerModel(id, cid, name);
    }
}
