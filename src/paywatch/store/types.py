"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

AMOUNT_DIGITS = 78  # len(str(2**256 - 1))


class Amount(TypeDecorator[int]):
    """An unsigned integer up to 2**256-1: NUMERIC(78,0) on PostgreSQL, exact text on SQLite.

    On SQLite the text is zero-padded to 78 digits so that SQL comparisons (``<``, ``>``,
    ``ORDER BY``), which compare text there, agree with the numeric order.
    """

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(78, 0, asdecimal=True))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"amounts are integers in base units, got {type(value).__name__}")
        if not 0 <= value < 10**AMOUNT_DIGITS:
            raise ValueError(f"amounts are unsigned and at most {AMOUNT_DIGITS} digits, got {value}")
        return Decimal(value) if dialect.name == "postgresql" else str(value).rjust(AMOUNT_DIGITS, "0")

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise TypeError("datetimes must be timezone-aware")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EpochSeconds(FunctionElement[int]):
    """``epoch_seconds(when)``: a :class:`UTCDateTime` column as whole unix seconds, computed by
    the database (floor of the fraction, as ``int(when.timestamp())``), on SQLite and PostgreSQL."""

    type = BigInteger()
    name = "epoch_seconds"
    inherit_cache = True


@compiles(EpochSeconds, "postgresql")
def _epoch_postgresql(element: EpochSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(floor(extract(epoch FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(EpochSeconds)
def _epoch_sqlite(element: EpochSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTCDateTime as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'; the fraction is cut
    # off as text (strftime would round it to milliseconds first, making 59.9999995 the next second)
    return f"CAST(strftime('%s', substr({compiler.process(element.clauses, **kw)}, 1, 19)) AS INTEGER)"
