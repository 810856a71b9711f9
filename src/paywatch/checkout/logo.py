"""A store's logo on its pay pages: PNG or JPEG only, at most 64 KiB and 1024 x 1024 pixels.

The page loads nothing from another origin, so a logo is never a URL: the merchant uploads the
image (``PUT /v1/store/logo`` or ``paywatch store logo``), it is checked here (the bytes must be
the type they claim, with sane dimensions: no SVG, whose scripts and external references a CSP would
have to trust), stored in the database and served from the page's own origin.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from paywatch.audit import audit
from paywatch.checkout.models import StoreLogo
from paywatch.errors import InputError

MAX_LOGO_BYTES = 64 * 1024
MAX_LOGO_PIXELS = 1024  # per side: a tiny file must not decode into a huge bitmap on the payer's phone
LOGO_TYPES = ("image/png", "image/jpeg")
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class Image:
    """A checked image: its type (sniffed, not as declared) and dimensions."""

    content_type: str
    width: int
    height: int


def _png(data: bytes) -> tuple[int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR" or not data.endswith(b"IEND\xaeB`\x82"):
        raise ValueError("a PNG must start with its IHDR chunk and end with IEND")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg(data: bytes) -> tuple[int, int]:
    if not data.endswith(b"\xff\xd9"):
        raise ValueError("a JPEG must end with its EOI marker")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("a JPEG segment is malformed")
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if length < 2:
            raise ValueError("a JPEG segment is malformed")
        pos += 2 + length
    raise ValueError("a JPEG needs a frame header (SOF) with its size")


def check_logo(data: bytes, content_type: str | None) -> Image:
    """The image if ``data`` is a PNG or JPEG of the declared type within the limits; else a 422
    naming ``logo`` (a 413 is the body limit's, before this)."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in LOGO_TYPES:
        raise InputError(
            f"logo: Content-Type must be {' or '.join(LOGO_TYPES)}, not {declared or 'missing'}", field="logo"
        )
    if not data:
        raise InputError("logo: the body is empty", field="logo")
    if len(data) > MAX_LOGO_BYTES:
        raise InputError(f"logo: at most {MAX_LOGO_BYTES // 1024} KiB", field="logo")
    sniffed = "image/png" if data.startswith(_PNG) else "image/jpeg" if data.startswith(b"\xff\xd8\xff") else None
    if sniffed != declared:
        raise InputError(f"logo: the bytes are not a {declared.removeprefix('image/').upper()} image", field="logo")
    try:
        width, height = _png(data) if sniffed == "image/png" else _jpeg(data)
    except (ValueError, struct.error) as exc:
        raise InputError(f"logo: {exc}", field="logo") from None
    if not (0 < width <= MAX_LOGO_PIXELS and 0 < height <= MAX_LOGO_PIXELS):
        raise InputError(
            f"logo: at most {MAX_LOGO_PIXELS} x {MAX_LOGO_PIXELS} pixels, got {width} x {height}", field="logo"
        )
    return Image(sniffed, width, height)


def set_logo(
    session: Session, store_id: str, data: bytes, content_type: str | None, now: datetime, *, actor: str
) -> StoreLogo:
    """Check and store ``store_id``'s logo (replacing any), audited."""
    image = check_logo(data, content_type)
    row = session.get(StoreLogo, store_id) or StoreLogo(
        store_id=store_id, content_type="", data=b"", sha256="", width=0, height=0, updated_at=now
    )
    row.content_type, row.data, row.width, row.height = image.content_type, data, image.width, image.height
    row.sha256 = hashlib.sha256(data).hexdigest()
    row.updated_at = now
    session.add(row)
    audit(
        session, now, actor, "store.logo", store_id, content_type=image.content_type, bytes=len(data), sha256=row.sha256
    )
    return row


def remove_logo(session: Session, store_id: str, now: datetime, *, actor: str) -> bool:
    """Remove the store's logo; False when it had none."""
    row = session.get(StoreLogo, store_id)
    if row is None:
        return False
    session.delete(row)
    audit(session, now, actor, "store.logo_removed", store_id)
    return True


def logo_view(row: StoreLogo | None) -> dict[str, object] | None:
    """What ``GET /v1/store`` says of the logo (never the bytes)."""
    if row is None:
        return None
    return {
        "content_type": row.content_type,
        "bytes": len(row.data),
        "width": row.width,
        "height": row.height,
        "sha256": row.sha256,
    }
