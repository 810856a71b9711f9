"""Pure rate arithmetic: the median of source quotes, the spread rule, fiat <-> base-unit conversion.

No I/O and no clock: prices are ``Decimal`` values already parsed, times are parameters.
A price is "fiat per one whole unit of the crypto asset" (for ETH/USD about 3000).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext


class NoRateError(ValueError):
    """No trustworthy rate can be formed from the given quotes (none, garbage, or too spread)."""


@dataclass(frozen=True)
class Quote:
    """One source's price of one whole ``asset`` unit in ``fiat`` at ``at``."""

    source: str
    asset: str
    fiat: str
    price: Decimal
    at: datetime


@dataclass(frozen=True)
class Rate:
    """An aggregated price: the median of the sources that answered and agreed."""

    asset: str
    fiat: str
    price: Decimal
    at: datetime
    sources: tuple[str, ...]

    def age(self, now: datetime) -> timedelta:
        """How old the rate is at ``now``."""
        return now - self.at

    def is_stale(self, now: datetime, max_age: timedelta) -> bool:
        """True when the rate is older than ``max_age`` (or from the future beyond it)."""
        return abs(self.age(now)) > max_age


def is_sane_price(price: object) -> bool:
    """A usable price is a finite Decimal greater than zero."""
    return isinstance(price, Decimal) and price.is_finite() and price > 0


def median(values: Sequence[Decimal]) -> Decimal:
    """The median of a non-empty sequence (the mean of the two middle values for an even count)."""
    if not values:
        raise NoRateError("no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    with localcontext() as ctx:
        ctx.prec = 50
        return (ordered[middle - 1] + ordered[middle]) / 2


def aggregate(quotes: Sequence[Quote], *, max_spread: Decimal, now: datetime) -> Rate:
    """Median of the sane quotes; quotes further than ``max_spread`` (a fraction) from it are dropped.

    If dropping leaves half of the answering sources or fewer, the sources disagree and there is no
    rate: a price the majority does not support is never used.
    """
    sane = [q for q in quotes if is_sane_price(q.price)]
    if not sane:
        raise NoRateError("no source answered with a usable price")
    assets = {(q.asset, q.fiat) for q in sane}
    if len(assets) != 1:
        raise NoRateError(f"quotes of different pairs mixed: {sorted(assets)}")
    centre = median([q.price for q in sane])
    with localcontext() as ctx:
        ctx.prec = 50
        kept = [q for q in sane if abs(q.price - centre) / centre <= max_spread]
    if len(kept) * 2 <= len(sane):
        spread = ", ".join(f"{q.source}={q.price}" for q in sane)
        raise NoRateError(f"sources disagree by more than {max_spread}: {spread}")
    asset, fiat = next(iter(assets))
    return Rate(
        asset=asset,
        fiat=fiat,
        price=median([q.price for q in kept]),
        at=now,
        sources=tuple(sorted(q.source for q in kept)),
    )


def fiat_to_units(fiat_amount: Decimal, price: Decimal, decimals: int) -> int:
    """Base units of an asset worth ``fiat_amount`` at ``price``, rounded up (the payer never pays short)."""
    if not is_sane_price(price):
        raise NoRateError(f"unusable price {price!r}")
    with localcontext() as ctx:
        ctx.prec = 120
        units = (fiat_amount * (Decimal(10) ** decimals) / price).to_integral_value(rounding=ROUND_CEILING)
    return int(units)


def units_to_fiat(units: int, price: Decimal, decimals: int, fiat_exponent: int = 2) -> Decimal:
    """The fiat value of ``units`` base units at ``price``, rounded down to ``fiat_exponent`` places."""
    with localcontext() as ctx:
        ctx.prec = 120
        value = Decimal(units) * price / (Decimal(10) ** decimals)
        return value.quantize(Decimal(1).scaleb(-fiat_exponent), rounding=ROUND_FLOOR)


def cross(price: Decimal, fiat_per_fiat: Decimal) -> Decimal:
    """Re-express a price quoted in fiat A as fiat B, given how many B one A buys."""
    with localcontext() as ctx:
        ctx.prec = 50
        return price * fiat_per_fiat
