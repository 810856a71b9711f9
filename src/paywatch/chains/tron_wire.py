"""The shapes of the java-tron answers the Tron adapter reads, decoded by msgspec.

A busy block is about 400 transactions and the same number of transaction infos. Decoding the
whole answer into dicts costs more than everything the adapter does with it, so the two block
answers (``wallet/getblockbynum``, ``wallet/gettransactioninfobyblocknum``) are decoded straight
into these structs: only the fields the adapter reads are built, every other field is skipped.
A contract's ``parameter.value`` is kept as raw JSON and decoded only for a ``TransferContract``.
The structs are not tracked by the garbage collector (``gc=False``: they hold no references that
could form a cycle), so a block's thousands of them do not trigger collections of the whole heap.

Decoding checks types: a field of the wrong type (a string where a number belongs, say) makes the
whole answer a clear error naming the field (``$.transactions[3].txID``), never a guess. Fields
that the adapter only compares (``contractRet``, ``result``, ``type``, the memo) accept any JSON
value, as the dict form did: an odd value there simply does not match.

``Error``: java-tron reports its exceptions as ``{"Error": "..."}`` with HTTP 200;
:func:`node_error` finds it in a decoded answer of any shape.
"""

from __future__ import annotations

from typing import Any

import msgspec


class WireAnswer(msgspec.Struct, gc=False):
    """Any object answer: carries java-tron's ``Error`` member when the node sent one."""

    Error: Any = msgspec.UNSET


class WireHeaderRaw(msgspec.Struct, gc=False):
    """``block_header.raw_data``: genesis has no ``number`` (proto3 leaves out zeros)."""

    parentHash: str
    number: int = 0
    timestamp: int = 0


class WireHeader(msgspec.Struct, gc=False):
    raw_data: WireHeaderRaw


class WireRet(msgspec.Struct, gc=False):
    contractRet: Any = None


class WireParameter(msgspec.Struct, gc=False):
    value: msgspec.Raw = msgspec.Raw(b"{}")


class WireContract(msgspec.Struct, gc=False):
    type: Any = None
    parameter: WireParameter | None = None


class WireTxRaw(msgspec.Struct, gc=False):
    contract: list[WireContract] | None = None
    data: Any = None


class WireTx(msgspec.Struct, gc=False):
    txID: str
    raw_data: WireTxRaw
    ret: list[WireRet] | None = None


class WireBlockHead(WireAnswer, gc=False):
    """What identifies a block answer; ``{}`` (no such block yet) decodes with ``blockID`` None."""

    blockID: str | None = None
    block_header: WireHeader | None = None


class WireBlock(WireBlockHead, gc=False):
    """A ``protocol.Block`` answer with its transactions."""

    transactions: list[WireTx] | None = None


class WireTransferValue(msgspec.Struct, gc=False):
    """``parameter.value`` of a ``TransferContract`` (addresses in 41-prefixed hex)."""

    to_address: str
    owner_address: str = ""
    amount: int = 0


class WireReceipt(msgspec.Struct, gc=False):
    result: Any = None


class WireLog(msgspec.Struct, gc=False):
    address: str = ""
    topics: list[str] | None = None
    data: str = ""


class WireInfo(msgspec.Struct, gc=False):
    """One ``TransactionInfo``."""

    id: str | None = None
    blockNumber: int = -1
    blockTimeStamp: int = 0
    result: Any = "SUCCESS"
    receipt: WireReceipt | None = None
    log: list[WireLog] | None = None


#: ``wallet/getblockbynum``
BLOCK = msgspec.json.Decoder(WireBlock)
#: ``wallet/gettransactioninfobyblocknum``: a list, or ``{}`` for a block without infos (or an Error)
BLOCK_INFOS: msgspec.json.Decoder[list[WireInfo] | dict[str, Any]] = msgspec.json.Decoder(
    list[WireInfo] | dict[str, Any]
)
_TRANSFER_VALUE = msgspec.json.Decoder(WireTransferValue)


def transfer_value(contract: WireContract) -> WireTransferValue:
    """The ``value`` of a ``TransferContract``; raises ValueError naming the field if malformed."""
    raw = contract.parameter.value if contract.parameter is not None else msgspec.Raw(b"{}")
    try:
        return _TRANSFER_VALUE.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(f"TransferContract value: {exc}") from None


def info_of(answer: dict[str, Any]) -> WireInfo:
    """A transaction info decoded by another client (tronpy's dict) as a :class:`WireInfo`."""
    try:
        return msgspec.convert(answer, WireInfo)
    except msgspec.ValidationError as exc:
        raise ValueError(f"transaction info: {exc}") from None


def block_head_of(answer: dict[str, Any]) -> WireBlockHead:
    """The identity of a block decoded by another client (tronpy's dict); its transactions are not
    looked at (a decoded ``parameter.value`` cannot become raw JSON again)."""
    try:
        return msgspec.convert(answer, WireBlockHead)
    except msgspec.ValidationError as exc:
        raise ValueError(f"block: {exc}") from None


def node_error(answer: object) -> tuple[bool, Any]:
    """(True, its value) when a decoded answer is java-tron's ``{"Error": ...}``, else (False, None)."""
    if isinstance(answer, dict):
        return ("Error" in answer, answer.get("Error"))
    if isinstance(answer, WireAnswer) and answer.Error is not msgspec.UNSET:
        return (True, answer.Error)
    return (False, None)
