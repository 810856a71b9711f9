"""Checks on merchant-supplied free text and metadata, shared by the API and the services.

Free text must be storable and serialisable everywhere: no NUL characters (PostgreSQL refuses
them) and no lone UTF-16 surrogates (they cannot be encoded as UTF-8). Metadata is a JSON object
of bounded depth and size whose strings pass the same check, whose numbers are finite and whose
integers fit in 64 bits, so every callback body carrying it is strict JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

from paywatch.errors import InputError

MAX_METADATA_DEPTH = 32
MAX_METADATA_BYTES = 16 * 1024
_INT_LIMIT = 2**63


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (None when it can)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it contains a lone surrogate)"
    return None


def check_text(value: str | None, field: str) -> None:
    """InputError naming ``field`` when ``value`` is not storable text."""
    if value is not None:
        problem = text_problem(value)
        if problem is not None:
            raise InputError(f"{field}: {problem}", field=field)


def check_metadata(value: Any, field: str = "metadata") -> None:
    """InputError naming ``field`` unless ``value`` is a bounded JSON object of valid, finite values.

    Walks the value without recursion, so no nesting depth can exhaust the stack.
    """

    def bad(reason: str) -> InputError:
        return InputError(f"{field}: {reason}", field=field)

    if not isinstance(value, dict):
        raise bad("must be a JSON object")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise bad(f"is nested more than {MAX_METADATA_DEPTH} levels deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise bad("keys must be strings")
                    problem = text_problem(key)
                    if problem is not None:
                        raise bad(f"a key {problem}")
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise bad(f"a value {problem}")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -_INT_LIMIT <= item < _INT_LIMIT:
                raise bad("integers must fit in 64 bits (send large numbers as strings)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise bad("numbers must be finite (NaN and Infinity are not JSON)")
        else:
            raise bad(f"unsupported value of type {type(item).__name__}")
    size = len(json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise bad(f"is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")


def strict_json(value: Any) -> str:
    """Compact, strict JSON (no NaN or Infinity): how every callback body is written."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
