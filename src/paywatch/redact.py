"""Keep RPC credentials out of every error, log line, metric, API field and database column.

RPC URLs carry secrets in every part but the host: the path (``/v3/KEY``), the userinfo
(``user:pass@``), the query (``?apikey=``); so do endpoint headers, TronGrid keys and proxy URLs.

* :func:`render_endpoint` is THE way an endpoint is shown anywhere: ``scheme://host:port`` plus a
  short stable id (``#`` and 8 hex digits of a hash of the full URL), so that two endpoints on one
  host stay apart without showing what tells them apart.
* :func:`register_secrets` records the secret parts of configured URLs and headers (config
  validation and the RPC clients call it), and :func:`scrub` replaces them (and any URL of a
  registered endpoint) in text that came from elsewhere: messages of the libraries we wrap, error
  bodies a node echoes back, formatted tracebacks. :class:`ScrubFilter` applies it to log records.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
#: secret fragments shorter than this are not registered (they would mask ordinary words)
MIN_SECRET = 4
#: path segments at least this long are treated as keys on their own (``/v3/<key>``)
MIN_PATH_KEY = 8
_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}

_lock = threading.Lock()
_secrets: set[str] = set()
_urls: dict[str, str] = {}  # full URL -> rendered form
_ordered: list[str] = []  # secrets, longest first


def endpoint_id(url: str) -> str:
    """A short stable id of ``url`` (8 hex digits of BLAKE2b over the full URL)."""
    return hashlib.blake2b(url.encode(), digest_size=4, person=b"pw-endpt").hexdigest()


def render_endpoint(url: str) -> str:
    """``scheme://host:port#id``: the only form in which an endpoint URL leaves paywatch."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:  # an unparsable port or bracket: show nothing of it
        return f"invalid-url#{endpoint_id(url)}"
    scheme = (parts.scheme or "?").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    where = f"{scheme}://{host}:{port}" if port is not None else f"{scheme}://{host}"
    return f"{where}#{endpoint_id(url)}"


def url_secrets(url: str) -> list[str]:
    """Every part of ``url`` that may be a credential: userinfo, path, query, fragment, and the
    values inside them (raw and percent-decoded)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return [url]
    found: list[str] = []
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        found.append(userinfo)
        user, _, password = userinfo.partition(":")
        found.extend([password, unquote(password), unquote(userinfo)])
        # the Basic credentials a client derives from it (a node may echo its Authorization header)
        found.append(base64.b64encode(unquote(userinfo).encode()).decode())
        if password == "":
            found.extend([user, unquote(user)])
    path = parts.path.rstrip("/")
    if path:
        found.extend([path, unquote(path)])
        found.extend(s for s in path.split("/") if len(s) >= MIN_PATH_KEY)
    for text in (parts.query, parts.fragment):
        if text:
            found.extend([text, unquote(text)])
            for _key, value in parse_qsl(text, keep_blank_values=True):
                found.append(value)
    return [s for s in found if len(s) >= MIN_SECRET]


def _value_secrets(value: str | None) -> list[str]:
    """A header value or key, and its credential alone (``Bearer <token>`` -> ``<token>``)."""
    if not value:
        return []
    found = [value, value.strip()]
    scheme, _, credential = value.strip().partition(" ")
    if credential and scheme.isalpha():
        found.append(credential.strip())
    return [s for s in found if len(s) >= MIN_SECRET]


def register_secrets(values: Iterable[str | None] = (), *, urls: Iterable[str] = ()) -> None:
    """Remember secrets (header values, keys) and the secret parts of ``urls`` for :func:`scrub`."""
    with _lock:
        changed = False
        for url in urls:
            if url and url not in _urls:
                _urls[url] = render_endpoint(url)
                changed = True
            for secret in url_secrets(url):
                if secret not in _secrets:
                    _secrets.add(secret)
                    changed = True
        for value in values:
            for secret in _value_secrets(value):
                if secret not in _secrets:
                    _secrets.add(secret)
                    changed = True
        if changed:
            _ordered[:] = sorted(_secrets, key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with every registered endpoint URL rendered and every registered secret masked."""
    if not text:
        return text
    with _lock:
        urls = sorted(_urls.items(), key=lambda item: len(item[0]), reverse=True)
        ordered = list(_ordered)
    for url, rendered in urls:
        if url in text:
            text = text.replace(url, rendered)
    for secret in ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception from a library we wrap, scrubbed."""
    return scrub(f"{type(exc).__name__}: {exc}")


class ScrubFilter(logging.Filter):
    """Scrubs the message and the formatted traceback of every record passing a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
