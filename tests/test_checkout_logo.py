"""A store's logo on its pay pages: PNG or JPEG only, size and dimension caps, served from the same
origin under the page's strict CSP, with alt text; no URL, no SVG."""

from __future__ import annotations

import re
import struct
import zlib

from paywatch.checkout.logo import MAX_LOGO_BYTES
from tests.support.api_helpers import Api, add_store
from tests.test_checkout_api import api, create, rates_srv  # noqa: F401  (fixtures)
from tests.test_checkout_page import slug_of


def png(width: int, height: int, *, pad: int = 0) -> bytes:
    """A real grayscale PNG (``pad`` adds an ancillary text chunk to make it bigger)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(width) for _ in range(height))
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw))
    if pad:
        body += chunk(b"tEXt", b"c\x00" + b"x" * pad)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def jpeg(width: int, height: int) -> bytes:
    """The header structure of a baseline JPEG (APP0, SOF0), enough for the checks made on upload."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def put(api: Api, data: bytes, content_type: str, key: str | None = None) -> tuple[int, str | None]:  # noqa: F811
    headers = {**api.headers(key), "content-type": content_type}
    response = api.client.put("/v1/store/logo", content=data, headers=headers)
    field = response.json()["error"]["field"] if response.status_code >= 400 and response.content else None
    return response.status_code, field


def test_png_logo_on_the_page_same_origin_with_alt_text(api: Api) -> None:  # noqa: F811
    image = png(64, 32)
    assert put(api, image, "image/png") == (204, None)
    got = api.client.get("/v1/store/logo", headers=api.headers())
    assert got.status_code == 200 and got.content == image and got.headers["content-type"] == "image/png"
    inv = create(api).json()
    page = api.client.get(f"/pay/{slug_of(inv)}")
    tag = re.search(r"<img [^>]*>", page.text)
    assert tag is not None, page.text
    assert 'alt="Logo of shop"' in tag.group(0) and 'width="64"' in tag.group(0) and 'height="32"' in tag.group(0)
    src = re.search(r'src="([^"]+)"', tag.group(0))
    assert src is not None and src.group(1).startswith(f"{slug_of(inv)}/logo?v=")  # relative: this origin
    csp = page.headers["content-security-policy"]
    assert "img-src 'self' data:;" in csp and "default-src 'none'" in csp  # unchanged, strict
    served = api.client.get(f"/pay/{slug_of(inv)}/logo")
    assert served.status_code == 200 and served.content == image
    assert served.headers["content-type"] == "image/png" and served.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in served.headers["content-security-policy"]
    assert api.client.get("/pay/nope/logo").status_code == 404


def test_jpeg_replaces_and_delete_removes(api: Api) -> None:  # noqa: F811
    assert put(api, png(8, 8), "image/png")[0] == 204
    assert put(api, jpeg(120, 40), "image/jpeg") == (204, None)
    inv = create(api).json()
    assert api.client.get(f"/pay/{slug_of(inv)}/logo").headers["content-type"] == "image/jpeg"
    assert 'width="120"' in api.client.get(f"/pay/{slug_of(inv)}").text
    assert api.client.delete("/v1/store/logo", headers=api.headers()).status_code == 204
    assert "<img" not in api.client.get(f"/pay/{slug_of(inv)}").text
    assert api.client.get(f"/pay/{slug_of(inv)}/logo").status_code == 404
    assert api.client.delete("/v1/store/logo", headers=api.headers()).status_code == 404


def test_only_small_png_or_jpeg_is_accepted(api: Api) -> None:  # noqa: F811
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    refused = [
        (svg, "image/svg+xml"),
        (svg, "image/png"),
        (gif, "image/gif"),
        (png(8, 8), "image/jpeg"),  # bytes and declared type disagree
        (jpeg(8, 8), "image/png"),
        (b"https://cdn.example/logo.png", "text/plain"),
        (b"", "image/png"),
        (png(8, 8)[:40], "image/png"),  # truncated
        (png(4096, 1), "image/png"),  # too wide: a small file must not become a huge bitmap
        (jpeg(10, 5000), "image/jpeg"),
        (png(8, 8, pad=MAX_LOGO_BYTES), "image/png"),  # too big (the body limit or the logo cap)
    ]
    for data, content_type in refused:
        status, field = put(api, data, content_type)
        assert status in (413, 422), (content_type, data[:20], status)
        assert status == 413 or field == "logo", (content_type, field)
    assert api.client.get("/v1/store/logo", headers=api.headers()).status_code == 404


def test_a_logo_belongs_to_its_store(api: Api) -> None:  # noqa: F811
    other = add_store(api, "other")
    assert put(api, png(8, 8), "image/png", key=other)[0] == 204
    inv = create(api).json()  # the first store has no logo
    assert "<img" not in api.client.get(f"/pay/{slug_of(inv)}").text
    assert api.client.get(f"/pay/{slug_of(inv)}/logo").status_code == 404
    assert api.client.put("/v1/store/logo", content=png(8, 8), headers={"content-type": "image/png"}).status_code == 401
