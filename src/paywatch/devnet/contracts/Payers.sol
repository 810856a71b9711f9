// SPDX-License-Identifier: MIT
// Contracts that send the native coin from inside a transaction (internal transfers), for the tests
// of `internal_transfers: trace`. Compiled offline with solc-js 0.8.37 (see README.md).
pragma solidity ^0.8.20;

/// Sends every coin it receives on to `to` (a payment router).
contract Forwarder {
    function forward(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        require(ok, "forward failed");
    }
}

/// Pays several recipients in one transaction (an exchange's batch withdrawal).
contract BatchPayer {
    function pay(address payable[] calldata to, uint256[] calldata amounts) external payable {
        require(to.length == amounts.length, "length mismatch");
        for (uint256 i = 0; i < to.length; i++) {
            (bool ok, ) = to[i].call{value: amounts[i]}("");
            require(ok, "payment failed");
        }
    }
}

/// Pays `good`, then makes a send to `bad` inside an inner call that reverts; the transaction succeeds.
contract RevertingPayer {
    function pay(address payable good, address payable bad) external payable {
        uint256 half = msg.value / 2;
        (bool ok, ) = good.call{value: half}("");
        require(ok, "good payment failed");
        (bool inner, ) = address(this).call(abi.encodeWithSelector(this.sendAndRevert.selector, bad, msg.value - half));
        require(!inner, "the inner call should have reverted");
    }

    function sendAndRevert(address payable to, uint256 amount) external {
        (bool ok, ) = to.call{value: amount}("");
        require(ok, "send failed");
        revert("undone");
    }

    /// Sends to `to`, which refuses (its own frame reverts); the transaction still succeeds.
    function payRefusing(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        require(!ok, "the recipient should have refused");
    }
}

/// Refuses every coin sent to it (its runtime code is put on an address to make a call frame revert).
contract Refuser {
    receive() external payable {
        revert("refused");
    }
}

/// A Safe-like smart-contract wallet: its owner has it execute calls, which may carry coin.
contract MiniSafe {
    address public owner;
    uint256 public nonce;

    event ExecutionSuccess(uint256 nonce);

    constructor() {
        owner = msg.sender;
    }

    receive() external payable {}

    function execTransaction(address to, uint256 value, bytes calldata data) external returns (bool success) {
        require(msg.sender == owner, "not the owner");
        nonce++;
        (success, ) = to.call{value: value}(data);
        require(success, "execution failed");
        emit ExecutionSuccess(nonce - 1);
    }
}
