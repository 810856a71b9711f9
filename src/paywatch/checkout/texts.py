"""Every text the pay page shows, in one place (ready for translation: add a language, pick it by key)."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Payment",
        "logo_of": "Logo of",
        "items": "Items",
        "quantity": "Qty",
        "discount": "Discount",
        "tax": "Tax",
        "total": "Total",
        "remaining": "Remaining",
        "choose": "Choose how to pay",
        "pay_with": "Pay with",
        "amount": "Amount",
        "address": "Address",
        "memo": "Memo (required)",
        "copy": "Copy",
        "copied": "Copied",
        "qr_label": "QR code of the payment request",
        "rate_lock": "Rate locked for",
        "invoice_expires": "Invoice expires in",
        "lock_over": "Rate lock over: choose a currency again for a new quote",
        "PENDING": "Waiting for your payment",
        "RECEIVED": "Payment received",
        "CONFIRMING": "Confirming",
        "PARTIAL": "Partially paid",
        "WAITING_FOR_CONFIRMATIONS": "Confirming",
        "COMPLETED": "Paid",
        "EXPIRED": "Expired",
        "PARTIALLY_EXPIRED": "Expired, partially paid",
        "CANCELLED": "Cancelled",
        "pay_remainder": "Pay the remainder",
        "back_to_shop": "Back to the shop",
        "not_found_title": "Page not found",
        "not_found": "There is no payment page at this address.",
        "error": "Something went wrong; please try again.",
        "unavailable": "Prices are unavailable right now; please try again in a minute.",
    }
}


def texts(language: str = "en") -> dict[str, str]:
    """The texts of ``language`` (English when unknown)."""
    return TEXTS.get(language, TEXTS["en"])
