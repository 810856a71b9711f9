"""The invoice as merchants see it: the GET body and every callback's ``data``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from paywatch.config import NetworkConfig
from paywatch.domain.amounts import format_amount
from paywatch.domain.status import Heights, confirmations, is_confirmed
from paywatch.domain.transfer import NATIVE
from paywatch.store.models import Invoice, Payment


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z`` suffix."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payment_uri(invoice: Invoice, network: NetworkConfig) -> str:
    """EIP-681 for EVM (native and token), BIP21 for Bitcoin, Litecoin and Dogecoin, ``tron:`` for Tron."""
    if network.family == "utxo":
        amount = format_amount(invoice.amount, invoice.decimals)
        return f"{network.chain}:{invoice.address}?amount={amount}"
    if network.family == "evm":
        if invoice.asset_key == NATIVE:
            return f"ethereum:{invoice.address}@{network.chain_id}?value={invoice.amount}"
        asset = network.assets[invoice.asset]
        return (
            f"ethereum:{asset.contract}@{network.chain_id}/transfer?address={invoice.address}&uint256={invoice.amount}"
        )
    query: dict[str, str] = {"amount": format_amount(invoice.amount, invoice.decimals)}
    if invoice.asset_key != NATIVE:
        query["token"] = invoice.asset_key
    if invoice.memo:
        query["memo"] = invoice.memo
    return f"tron:{invoice.address}?{urlencode(query, quote_via=quote)}"


def payment_view(payment: Payment, invoice: Invoice, heights: Heights, network: NetworkConfig) -> dict[str, Any]:
    if payment.orphaned:
        state, confs = "orphaned", 0
    elif payment.mempool:
        state, confs = "seen", 0
    else:
        confirmed = is_confirmed(payment.block_number, invoice.confirmations_required, heights)
        state, confs = ("confirmed" if confirmed else "seen"), confirmations(payment.block_number, heights)
    explorer = network.explorer_tx_url.format(tx=payment.tx_hash) if network.explorer_tx_url else None
    return {
        "tx_hash": payment.tx_hash,
        "log_index": payment.log_index,
        "from_address": payment.from_address,
        "amount": format_amount(payment.amount, invoice.decimals),
        "block_number": None if payment.mempool else payment.block_number,
        "block_hash": None if payment.mempool else payment.block_hash,
        "block_time": iso(payment.block_time),
        "confirmations": confs,
        "state": state,
        "late": payment.late,
        "explorer_url": explorer,
        "in_mempool": payment.mempool,
        "rbf": payment.replaceable,
    }


class HistoryEntry(Protocol):
    """What the invoice JSON shows of a status history row (stored or about to be)."""

    @property
    def status(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def reason(self) -> str: ...


def invoice_view(
    invoice: Invoice,
    payments: list[Payment],
    history: Sequence[HistoryEntry],
    heights: Heights,
    network: NetworkConfig,
) -> dict[str, Any]:
    """The invoice JSON (docs/api.md); amounts are decimal strings in asset units."""
    decimals = invoice.decimals
    return {
        "id": invoice.id,
        "store_id": invoice.store_id,
        "status": invoice.status,
        "status_version": invoice.status_version,
        "flags": sorted(invoice.flags),
        "network": invoice.network,
        "asset": invoice.asset,
        "amount": format_amount(invoice.amount, decimals),
        "amount_paid": format_amount(invoice.amount_paid, decimals),
        "amount_pending": format_amount(invoice.amount_paid - invoice.amount_confirmed, decimals),
        "amount_due": format_amount(max(0, invoice.amount - invoice.amount_paid), decimals),
        "address": invoice.address,
        "memo": invoice.memo,
        "match": invoice.match_strategy,
        "payment_uri": payment_uri(invoice, network),
        "confirmations_required": invoice.confirmations_required,
        "expires_at": iso(invoice.expires_at),
        "created_at": iso(invoice.created_at),
        "updated_at": iso(invoice.updated_at),
        "order_id": invoice.order_id,
        "description": invoice.description,
        "customer_email": invoice.customer_email,
        "callback_url": invoice.callback_url,
        "metadata": invoice.metadata_,
        "payments": [payment_view(p, invoice, heights, network) for p in payments],
        "history": [{"status": h.status, "at": iso(h.at), "reason": h.reason} for h in history],
    }
