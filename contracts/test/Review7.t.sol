// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Base} from "./utils/Base.sol";

contract Review7Test is Base {
    function test_stub() public {}
}
