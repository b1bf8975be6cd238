// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ModelRegistry} from "../src/ModelRegistry.sol";

import {Base} from "./utils/Base.sol";

contract ModelRegistryTest is Base {
    bytes internal constant MANIFEST =
        bytes('{"config":{"dim":576},"format":"supernet-weights-manifest/1","tensors":[]}');

    function test_RegisterModel_IdIsTheManifestHash() public {
        bytes32 id = sha256(MANIFEST);
        vm.expectEmit(address(registry));
        emit ModelRegistry.ModelRegistered(id, stranger, "SmolLM2-135M-Instruct");
        vm.prank(stranger);
        assertEq(registry.registerModel(MANIFEST, "SmolLM2-135M-Instruct"), id);

        ModelRegistry.Model memory m = registry.getModel(id);
        assertEq(m.name, "SmolLM2-135M-Instruct");
        assertEq(m.publisher, stranger);
        assertEq(m.registeredAt, block.timestamp);
        assertTrue(registry.isRegistered(id));
        assertEq(registry.modelCount(), 1);
        assertEq(registry.modelAt(0), id);
    }

    /// Nobody can occupy the id of weights they do not describe: an id is the hash of the bytes
    /// posted, so a squatter's manifest gets its own id and the real one stays free.
    function test_ModelIdsCannotBeSquatted() public {
        bytes32 real = sha256(MANIFEST);
        vm.prank(stranger);
        bytes32 squatted = registry.registerModel(bytes("a manifest of other weights"), "SmolLM2-135M-Instruct");
        assertTrue(squatted != real);
        assertFalse(registry.isRegistered(real));
        assertEq(registry.registerModel(MANIFEST, "SmolLM2-135M-Instruct"), real);
        assertEq(registry.getModel(real).publisher, address(this));
    }

    function test_RevertWhen_RegisterModelDuplicate() public {
        registry.registerModel(MANIFEST, "a");
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelAlreadyRegistered.selector, sha256(MANIFEST)));
        registry.registerModel(MANIFEST, "b");
    }

    function test_RevertWhen_RegisterModelEmptyOrHugeManifest() public {
        vm.expectRevert(ModelRegistry.InvalidManifest.selector);
        registry.registerModel("", "a");
        bytes memory huge = new bytes(registry.MAX_MANIFEST_LENGTH() + 1);
        vm.expectRevert(ModelRegistry.InvalidManifest.selector);
        registry.registerModel(huge, "a");
    }

    function test_RevertWhen_RegisterModelNameTooLong() public {
        vm.expectRevert(ModelRegistry.InvalidName.selector);
        registry.registerModel(MANIFEST, string(new bytes(257)));
    }

    function test_RevertWhen_GetModelUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, MODEL_ID));
        registry.getModel(MODEL_ID);
    }

    function test_RevertWhen_ModelAtOutOfRange() public {
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.IndexOutOfRange.selector, 0, 0));
        registry.modelAt(0);
    }

    function testFuzz_RegisterModel(bytes calldata manifest, string calldata name) public {
        vm.assume(manifest.length != 0 && bytes(name).length <= 256);
        bytes32 id = registry.registerModel(manifest, name);
        assertEq(id, sha256(manifest));
        assertEq(registry.getModel(id).name, name);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelAlreadyRegistered.selector, id));
        registry.registerModel(manifest, name);
    }
}
