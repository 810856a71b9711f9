"""amounts: decimal strings <-> integer base units, exact, no floats."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.domain.amounts import MAX_UINT256, format_amount, parse_amount
from paywatch.errors import AmountError, InputError


@pytest.mark.parametrize(
    ("text", "decimals", "units"),
    [
        pytest.param("25.5", 6, 25_500_000, id="usdt"),
        pytest.param("25.500000", 6, 25_500_000, id="trailing-zeros-within-decimals"),
        pytest.param("25.5000000000", 6, 25_500_000, id="trailing-zeros-beyond-decimals"),
        pytest.param("0.000001", 6, 1, id="one-base-unit"),
        pytest.param("1", 18, 10**18, id="one-ether"),
        pytest.param("007", 0, 7, id="leading-zeros"),
        pytest.param(" 3.5 ", 1, 35, id="surrounding-space"),
        pytest.param(42, 2, 4200, id="python-int"),
        pytest.param(str(MAX_UINT256), 0, MAX_UINT256, id="uint256-max-0-decimals"),
        pytest.param(format_amount(MAX_UINT256, 18), 18, MAX_UINT256, id="uint256-max-18-decimals"),
        pytest.param(format_amount(MAX_UINT256, 77), 77, MAX_UINT256, id="uint256-max-77-decimals"),
    ],
)
def test_parse_amount(text: object, decimals: int, units: int) -> None:
    assert parse_amount(text, decimals) == units


@pytest.mark.parametrize(
    ("units", "decimals", "text"),
    [
        pytest.param(25_500_000, 6, "25.5", id="shortest"),
        pytest.param(1, 6, "0.000001", id="smallest"),
        pytest.param(10**18, 18, "1", id="whole"),
        pytest.param(0, 6, "0", id="zero"),
        pytest.param(120, 0, "120", id="no-decimals"),
        pytest.param(-1_500_000, 6, "-1.5", id="negative-difference"),
        pytest.param(MAX_UINT256, 0, str(MAX_UINT256), id="uint256-max-0"),
        pytest.param(
            MAX_UINT256,
            18,
            "115792089237316195423570985008687907853269984665640564039457.584007913129639935",
            id="max-18",
        ),
    ],
)
def test_format_amount(units: int, decimals: int, text: str) -> None:
    assert format_amount(units, decimals) == text


@pytest.mark.parametrize("decimals", [0, 6, 18])
def test_max_uint256_round_trips(decimals: int) -> None:
    text = format_amount(MAX_UINT256, decimals)
    assert parse_amount(text, decimals) == MAX_UINT256
    assert text.replace(".", "") == str(MAX_UINT256)  # same digits, point in place


@pytest.mark.parametrize(
    ("value", "decimals", "message"),
    [
        pytest.param(25.5, 6, "decimal string", id="float"),
        pytest.param(True, 6, "decimal string", id="bool"),
        pytest.param(None, 6, "decimal string", id="none"),
        pytest.param(Decimal("1.5"), 6, "decimal string", id="decimal-object"),
        pytest.param(["1"], 6, "decimal string", id="list"),
        pytest.param("1e6", 6, "not a decimal number", id="exponent"),
        pytest.param("1E-2", 6, "not a decimal number", id="exponent-upper"),
        pytest.param("-1", 6, "greater than zero", id="negative"),
        pytest.param("+1", 6, "not a decimal number", id="plus-sign"),
        pytest.param("NaN", 6, "not a decimal number", id="nan"),
        pytest.param("Infinity", 6, "not a decimal number", id="infinity"),
        pytest.param("0x10", 6, "not a decimal number", id="hex"),
        pytest.param("1,5", 6, "not a decimal number", id="comma"),
        pytest.param("1_000", 6, "not a decimal number", id="underscore"),
        pytest.param(".5", 6, "not a decimal number", id="no-integer-part"),
        pytest.param("5.", 6, "not a decimal number", id="dangling-point"),
        pytest.param("", 6, "not a decimal number", id="empty"),
        pytest.param("abc", 6, "not a decimal number", id="letters"),
        pytest.param("١٢", 6, "not a decimal number", id="non-ascii-digits"),
        pytest.param("0", 6, "greater than zero", id="zero"),
        pytest.param("0.000", 6, "greater than zero", id="zero-with-decimals"),
        pytest.param(-5, 6, "greater than zero", id="negative-int"),
        pytest.param("0.0000001", 6, "7 decimal places", id="too-many-decimals"),
        pytest.param("1.5", 0, "1 decimal places", id="decimals-on-integer-asset"),
        pytest.param(str(MAX_UINT256 + 1), 0, "too large", id="above-uint256"),
        pytest.param(str(10**60), 18, "too large", id="above-uint256-scaled"),
    ],
)
def test_parse_amount_rejects(value: object, decimals: int, message: str) -> None:
    with pytest.raises(AmountError, match=message) as info:
        parse_amount(value, decimals, field="items[0].price")
    assert isinstance(info.value, InputError)
    assert info.value.field == "items[0].price"
    assert "items[0].price" in info.value.message


def test_error_names_default_field() -> None:
    with pytest.raises(AmountError) as info:
        parse_amount("x", 6)
    assert info.value.field == "amount"


@settings(max_examples=200, deadline=None)
@given(st.integers(1, MAX_UINT256), st.integers(0, 77))
def test_round_trip_property(units: int, decimals: int) -> None:
    text = format_amount(units, decimals)
    assert parse_amount(text, decimals) == units
    assert "e" not in text.lower()
    if "." in text:
        assert not text.endswith("0")


@pytest.mark.parametrize(
    ("text", "units"),
    [
        pytest.param("1" * 5000, None, id="5000-digit-integer"),
        pytest.param("0" * 5000 + "1", 1_000_000, id="5000-leading-zeros"),
        pytest.param("9" * 79, None, id="79-digits"),
        pytest.param("0." + "0" * 5000 + "1", None, id="5000-decimal-places"),
    ],
)
def test_huge_inputs_are_input_errors(text: str, units: int | None) -> None:
    """Python refuses int() of > 4300 digits with a bare ValueError; parse_amount must answer with AmountError."""
    if units is not None:
        assert parse_amount(text, 6) == units
        return
    with pytest.raises(AmountError):
        parse_amount(text, 6)
