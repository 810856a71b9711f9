"""How every CLI table reads: asset symbols from networks.yaml (``ETH``, ``USDT``), amounts in
decimal asset units (``ETH 3.041416671280614839``), short hashes and times, 80 columns by default,
and every column, nothing shortened, with ``--wide``. ``--json`` output is not made here: it keeps
base units beside the decimal amount.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.table import Table

from paywatch.cli.support import plain
from paywatch.domain.amounts import format_amount
from paywatch.domain.transfer import NATIVE

if TYPE_CHECKING:
    from paywatch.config import NetworkConfig

WIDE_WIDTH = 1000  # a table is only as wide as its cells: nothing is folded or cut


def asset_of(network: NetworkConfig | None, asset_key: str) -> tuple[str, int] | None:
    """The symbol and decimals of ``asset_key`` (``native`` or a lower-case contract) on ``network``."""
    if network is None:
        return None
    for symbol, asset in network.assets.items():
        if (asset.native and asset_key == NATIVE) or (asset.contract and asset.contract.lower() == asset_key.lower()):
            return symbol, asset.decimals
    return None


def decimal_amount(network: NetworkConfig | None, asset_key: str, units: int) -> tuple[str | None, str | None]:
    """(symbol, decimal amount) of ``units`` base units, or (None, None) for an asset not configured."""
    found = asset_of(network, asset_key)
    if found is None:
        return None, None
    symbol, decimals = found
    return symbol, format_amount(units, decimals)


def money(network: NetworkConfig | None, asset_key: str, units: int) -> str:
    """``ETH 3.041416671280614839``; an asset not in networks.yaml shows its base units and key."""
    symbol, amount = decimal_amount(network, asset_key, units)
    if symbol is None:
        return f"{units} base units of {short_hash(asset_key)}"
    return f"{symbol} {amount}"


def short_hash(value: str | None, head: int = 6, tail: int = 4) -> str:
    """``0x5fbd…0aa3``: enough to recognise a hash or an address; ``--wide`` shows it whole."""
    if not value:
        return ""
    if len(value) <= head + tail + 1:
        return value
    return f"{value[:head]}…{value[-tail:]}"


def short_time(value: Any) -> str:
    """An ISO timestamp to the minute (``2026-01-01 12:00``); empty for none."""
    if value is None or value == "":
        return ""
    text = str(value).replace("T", " ")
    return text[:16]


@dataclass(frozen=True)
class Column:
    """One table column: its header, the row key it shows, and whether the 80-column view has it."""

    header: str
    key: str
    compact: bool = True
    justify: Literal["left", "right"] = "left"
    no_wrap: bool = False


def print_table(
    console: Console,
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    *,
    wide: bool,
    compact: Mapping[str, Any] | None = None,
) -> None:
    """Print ``rows``: the compact columns fitted to the terminal, or every column with ``wide``.

    ``compact`` maps a key to a function giving the short form of that cell (a short hash, say);
    the wide view shows the value itself.
    """
    shown = [c for c in columns if wide or c.compact]
    table = Table(title=plain(title))
    for column in shown:
        table.add_column(column.header, justify=column.justify, no_wrap=column.no_wrap)
    for row in rows:
        cells = []
        for column in shown:
            value = row.get(column.key)
            if not wide and compact and column.key in compact:
                value = compact[column.key](value)
            cells.append("" if value is None else plain(value))  # external text: never Rich markup
        table.add_row(*cells)
    if wide:
        Console(width=max(console.width, WIDE_WIDTH), file=console.file, no_color=console.no_color).print(table)
    else:
        console.print(table)
