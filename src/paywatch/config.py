"""Settings (``PAYWATCH_*``) and networks.yaml, parsed and validated once at start.

Nothing outside this module reads the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from paywatch.chains import DEFAULT_MAX_RESPONSE_BYTES, utxo_addresses
from paywatch.checkout.rates.sources import SOURCE_CLASSES
from paywatch.domain.amounts import parse_amount
from paywatch.domain.matching import Strategy
from paywatch.domain.transfer import NATIVE, address_key
from paywatch.errors import AmountError, ConfigError, KeyMaterialError
from paywatch.keys import check_watch_only_key
from paywatch.redact import register_secrets
from paywatch.secretbox import SecretBox, parse_keys

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_TRON_ADDRESS = re.compile(r"^T[1-9A-HJ-NP-Za-km-z]{33}$")
#: chain families whose transfers carry a memo the memo strategy can match (EVM transfers carry none)
MEMO_FAMILIES = frozenset({"tron"})
_LEADING_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.]*): (?P<rest>.+)$", re.DOTALL)


#: placeholder passwords that must never reach a database (the shipped example once had one)
EXAMPLE_PASSWORDS = frozenset({"change-me", "changeme", "change_me"})


class Settings(BaseSettings):
    """Process settings from ``PAYWATCH_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="PAYWATCH_", extra="ignore", hide_input_in_errors=True)

    database_url: str = Field(default="sqlite:///./paywatch.db", repr=False)
    networks: Path = Path("./networks.yaml")
    allow_private_callbacks: bool = False
    log_json: bool = False
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    max_lag_seconds: int = Field(default=600, gt=0)
    #: open invoices with the unique-amount strategy, per store (a 409 beyond it)
    max_open_amount_invoices: int = Field(default=1000, gt=0)
    callback_ports: Annotated[frozenset[int], NoDecode] = frozenset({80, 443})
    secret_key: SecretStr | None = None
    """Fernet key(s), comma separated, first one encrypting: webhook secrets are then stored encrypted."""
    invoice_rate_per_minute: float = Field(default=120.0, ge=0)
    invoice_burst: int = Field(default=60, ge=1)
    redeliver_rate_per_minute: float = Field(default=30.0, ge=0)
    redeliver_burst: int = Field(default=30, ge=1)

    @field_validator("database_url")
    @classmethod
    def _no_example_password(cls, value: str) -> str:
        try:
            password = urlsplit(value).password
        except ValueError:
            return value  # malformed URLs are reported when the engine is made
        if password is not None and unquote(password).lower() in EXAMPLE_PASSWORDS:
            raise ValueError(
                "the database password is the example password from docker/example.env; "
                "set a strong POSTGRES_PASSWORD in docker/.env"
            )
        return value

    @field_validator("secret_key", mode="before")
    @classmethod
    def _fernet_keys(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw in (None, ""):
            return None
        if not isinstance(raw, str):
            raise ValueError("expected one or more Fernet keys separated by commas")
        parse_keys(raw)
        return value

    def secret_box(self) -> SecretBox:
        """Seals and opens stored webhook secrets with ``secret_key`` (plaintext when unset)."""
        keys = parse_keys(self.secret_key.get_secret_value()) if self.secret_key is not None else None
        return SecretBox(keys)

    @field_validator("callback_ports", mode="before")
    @classmethod
    def _ports(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = [int(part) for part in value.replace(" ", "").split(",") if part]
            except ValueError:
                raise ValueError("expected comma-separated port numbers, such as 80,443,8443") from None
        if isinstance(value, (list, tuple, set, frozenset)) and (
            not value or any(not isinstance(p, int) or not 1 <= p <= 65535 for p in value)
        ):
            raise ValueError("expected one or more port numbers 1..65535")
        return value

    metrics_token: str | None = Field(default=None, repr=False)
    """When set, ``GET /metrics`` requires ``Authorization: Bearer <token>`` (401 otherwise)."""
    metrics_bind: str | None = None
    """``host:port``: serve ``/metrics`` there only (not on the API port)."""

    @field_validator("metrics_token", "metrics_bind", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("metrics_bind")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            bind_address(value)
        return value

    # --- hosted checkout: rates and the pay page (docs/checkout.md) -------------------------------
    rates_sources: Annotated[tuple[str, ...], NoDecode] = ("coingecko", "kraken", "coinbase")
    """Price APIs asked for rates, comma separated; empty: none (fixed prices only)."""
    rates_base_urls: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """``source=url`` pairs, comma separated: a proxy or a local server instead of the public API."""
    rates_quote_fiats: Annotated[tuple[str, ...], NoDecode] = ("USD",)
    """Fiat currencies the sources are asked for; others are crossed through ECB reference rates."""
    rates_fixed: Annotated[dict[str, dict[str, Decimal]], NoDecode] = Field(default_factory=dict)
    """``ASSET:FIAT=PRICE`` pairs, comma separated (``USDT:USD=1``): never fetched, never stale."""
    rates_max_spread: Decimal = Field(default=Decimal("0.02"), gt=0, lt=1)
    rates_max_age_seconds: int = Field(default=300, gt=0)
    rates_refresh_seconds: int = Field(default=60, gt=0)
    rates_history_seconds: int = Field(default=7 * 86400, gt=0)
    rates_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    checkout_lock_minutes: int = Field(default=15, ge=1, le=1440)
    """How long the rate of a payment attempt is locked (never past the invoice's expiry)."""
    public_url: str = "http://127.0.0.1:8000"
    """The base URL payers reach the API at; ``invoice_url`` is ``<public_url>/pay/<slug>``."""
    development: bool = False
    """Development mode: ``redirect_url`` may be http (https only otherwise)."""

    @field_validator("rates_sources", "rates_quote_fiats", mode="before")
    @classmethod
    def _names(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected names separated by commas")
        if info.field_name == "rates_sources":
            unknown = [v for v in value if v not in SOURCE_CLASSES]
            if unknown:
                raise ValueError(f"unknown source {unknown[0]!r}; expected some of {', '.join(sorted(SOURCE_CLASSES))}")
            return tuple(dict.fromkeys(value))
        if not value or not all(len(v) == 3 and v.isascii() and v.isalpha() for v in value):
            raise ValueError("expected one or more three-letter currency codes, such as USD,EUR")
        return tuple(dict.fromkeys(v.upper() for v in value))

    @field_validator("rates_base_urls", mode="before")
    @classmethod
    def _base_urls(cls, value: object) -> object:
        pairs = _pairs(value, "source=https://host/path")
        for name, url in pairs.items():
            if name not in SOURCE_CLASSES:
                raise ValueError(f"unknown source {name!r}; expected some of {', '.join(sorted(SOURCE_CLASSES))}")
            if not _is_http_url(url):
                raise ValueError(f"{name}: expected an http(s) URL")
        return pairs

    @field_validator("rates_fixed", mode="before")
    @classmethod
    def _fixed(cls, value: object) -> object:
        if isinstance(value, dict):
            return value
        fixed: dict[str, dict[str, Decimal]] = {}
        for pair, price in _pairs(value, "ASSET:FIAT=PRICE, such as USDT:USD=1").items():
            asset, sep, fiat = pair.partition(":")
            try:
                amount = Decimal(price)
            except InvalidOperation:
                amount = Decimal(0)
            if not sep or not asset or len(fiat) != 3 or not fiat.isalpha() or not amount.is_finite() or amount <= 0:
                raise ValueError(f"{pair}={price}: expected ASSET:FIAT=PRICE with a positive decimal price")
            fixed.setdefault(asset.upper(), {})[fiat.upper()] = amount
        return fixed

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not _is_http_url(value) or urlsplit(value).query or urlsplit(value).fragment:
            raise ValueError("expected an http(s) base URL without query or fragment, such as https://pay.example.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _rates_coherent(self) -> Settings:
        if self.rates_refresh_seconds >= self.rates_max_age_seconds:
            raise ValueError(
                "rates_refresh_seconds: must be below PAYWATCH_RATES_MAX_AGE_SECONDS "
                f"({self.rates_max_age_seconds}), or every rate goes stale before the next refresh"
            )
        return self

    @model_validator(mode="after")
    def _register(self) -> Settings:
        try:
            password = make_url(self.database_url).password
        except Exception:  # an unparsable URL fails later, where it is used, with its own message
            password = None
        secret_key = self.secret_key.get_secret_value() if self.secret_key is not None else None
        register_secrets([self.metrics_token, str(password) if password else None, secret_key])
        return self


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _pairs(value: object, shape: str) -> dict[str, str]:
    """``a=1,b=2`` (or a mapping) -> {"a": "1", "b": "2"}; ValueError naming the expected shape."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str):
        raise ValueError(f"expected {shape} pairs separated by commas")
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"{part!r}: expected {shape} pairs separated by commas")
        pairs[key.strip()] = val.strip()
    return pairs


def bind_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9108`` for IPv6) -> (host, port); ValueError naming the expectation."""
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)


TRONGRID_KEY_HEADER = "TRON-PRO-API-KEY"


def is_trongrid(url: str) -> bool:
    """True for TronGrid's own hosts (``trongrid.io`` and ``*.trongrid.io``), the only ones that
    receive a network-wide ``api_key``."""
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return False
    return host == "trongrid.io" or host.endswith(".trongrid.io")


class RpcEndpoint(BaseModel):
    """One ``rpc_urls`` entry: a URL and the headers (or TronGrid-style key) sent to it alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    api_key: str | None = Field(default=None, repr=False)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL")
        try:
            urlsplit(value).port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("expected an http(s) URL with a valid port") from None
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("headers", mode="before")
    @classmethod
    def _header_map(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in value.items()
        ):
            raise ValueError("expected a mapping of header names to strings")
        return value


class AssetConfig(BaseModel):
    """One asset of a network: the native coin or a token contract.

    ``min_amount`` (a decimal string in asset units, such as ``"0.01"``) is the smallest transfer
    that may touch an invoice; smaller ones are dust and go to the unmatched inbox. Unset: only
    zero-value transfers are ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    native: bool = False
    contract: str | None = None
    decimals: int = Field(ge=0, le=77)
    min_amount: str | None = None

    @field_validator("decimals", mode="before")
    @classmethod
    def _int_decimals(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 77:
            raise ValueError("expected an integer 0..77")
        return value

    @field_validator("min_amount", mode="before")
    @classmethod
    def _decimal_min_amount(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not _DECIMAL.match(str(value).strip()):
            raise ValueError('expected a decimal string such as "0.01" in asset units (quote it)')
        decimals = info.data.get("decimals")
        if isinstance(decimals, int):
            try:
                parse_amount(str(value), decimals, field="min_amount")
            except AmountError as exc:
                raise ValueError(exc.message.removeprefix("min_amount ")) from None
        return str(value).strip()

    @property
    def key(self) -> str:
        """The asset key transfers carry: ``native``, or the contract in its compared form."""
        return NATIVE if self.native else address_key(self.contract or "")

    @property
    def min_units(self) -> int:
        """``min_amount`` in base units (1 when unset)."""
        return 1 if self.min_amount is None else parse_amount(self.min_amount, self.decimals, field="min_amount")

    @model_validator(mode="after")
    def _one_kind(self) -> AssetConfig:
        if self.native == (self.contract is not None):
            raise ValueError("expected exactly one of `native: true` or `contract: <address>`")
        return self


class NetworkConfig(BaseModel):
    """One network from networks.yaml, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    family: Literal["evm", "tron", "utxo"]
    chain_id: int | None = None
    rpc_urls: tuple[str, ...] = Field(repr=False)
    """The URLs of ``endpoints``, in failover order."""
    endpoints: tuple[RpcEndpoint, ...] = Field(default=(), repr=False)
    """The ``rpc_urls`` entries with their own headers; built from ``rpc_urls``, never set directly."""
    api_key: str | None = Field(default=None, repr=False)
    """A TronGrid key: sent only to TronGrid hosts among ``rpc_urls`` (``*.trongrid.io``)."""
    proxy: str | None = Field(default=None, repr=False)
    """The proxy of this network's RPC clients; without it the ``*_PROXY`` environment is ignored."""
    confirmations: int | None = Field(default=None, ge=1, le=10_000)
    finality: Literal["finalized", "solidified"] | None = None
    poll_interval: float = Field(default=5.0, gt=0, le=3600)
    max_block_range: int = Field(default=2000, ge=1, le=100_000)
    batch_blocks: int = Field(default=100, ge=1, le=10_000)
    start_block: int | None = Field(default=None, ge=0)
    requests_per_second: float = Field(default=10.0, gt=0)
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024, le=1024**3)
    """The largest RPC response body read (streamed; a larger one fails the request, retryably)."""
    quorum: Literal[1, 2] = 1
    """2: every scanned range's block hashes are checked against a second ``rpc_urls`` entry (evm)."""
    xpub: str | None = None
    deposit_address: str | None = None
    default_match: Strategy = Strategy.ADDRESS
    explorer_tx_url: str | None = None
    internal_transfers: Literal["trace", "off"] = "off"
    """``trace``: also credit coin sent by contracts (read from call traces; evm only)."""
    assets: dict[str, AssetConfig]
    # family utxo only (Bitcoin Core compatible nodes); see docs/utxo.md
    chain: utxo_addresses.Chain | None = None
    net: utxo_addresses.Net = "main"
    address_type: utxo_addresses.AddressType | None = None
    rpc_cookie_file: str | None = None
    body_batch: int = Field(default=25, ge=1, le=1000)
    mempool: bool = True
    mempool_max_per_poll: int = Field(default=500, ge=1, le=100_000)

    @model_validator(mode="before")
    @classmethod
    def _split_endpoints(cls, data: Any) -> Any:
        """``rpc_urls`` entries are URLs or ``{url, headers?, api_key?}``: keep both views."""
        if not isinstance(data, dict) or "rpc_urls" not in data:
            return data
        if "endpoints" in data:
            raise ValueError("endpoints: unknown key (give headers in the rpc_urls entries)")
        value = data["rpc_urls"]
        if isinstance(value, (str, dict)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError("rpc_urls: expected a list of http(s) URLs")
        entries = [v for v in value if v]
        if not entries:
            raise ValueError("rpc_urls: expected at least one non-empty URL")
        endpoints = []
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                if not entry.startswith(("http://", "https://")):
                    raise ValueError("rpc_urls: expected an http(s) URL")
                entry = {"url": entry}
            if not isinstance(entry, dict):
                raise ValueError(f"rpc_urls.{i}: expected a URL or a mapping {{url, headers, api_key}}")
            try:
                endpoints.append(RpcEndpoint.model_validate(entry))
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(p) for p in ("rpc_urls", i, *error["loc"]))
                message = str(error["msg"]).removeprefix("Value error, ")
                if error["type"] == "missing":
                    message = "required key is missing"
                elif error["type"] == "extra_forbidden":
                    message = "unknown key (expected url, headers, api_key)"
                raise ValueError(f"{where}: {message}") from None
        return {**data, "rpc_urls": tuple(e.url for e in endpoints), "endpoints": tuple(endpoints)}

    @field_validator("proxy", mode="before")
    @classmethod
    def _proxy_url(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// proxy URL")
        return value

    @field_validator("xpub", "api_key", "deposit_address", "rpc_cookie_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("xpub", mode="before")
    @classmethod
    def _xpub_not_number(cls, value: object) -> object:
        # An unquoted 0x-hex private key reaches us as a YAML integer.
        if isinstance(value, int) and not isinstance(value, bool):
            raise KeyMaterialError("xpub: this number looks like a private key; paywatch accepts only an xpub")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> NetworkConfig:
        if self.family == "evm" and self.chain_id is None:
            raise ValueError("chain_id: expected an integer for an evm network")
        if self.finality == "solidified" and self.family != "tron":
            raise ValueError("finality: `solidified` exists only on tron; use `finalized`")
        if self.finality == "finalized" and self.family != "evm":
            raise ValueError("finality: `finalized` exists only on evm; use `solidified`")
        if self.finality is not None and self.confirmations is not None:
            raise ValueError("expected either `confirmations` or `finality`, not both")
        if self.quorum == 2 and (self.family != "evm" or len(self.rpc_urls) < 2):
            raise ValueError("quorum: 2 needs an evm network with at least two rpc_urls")
        if self.default_match is Strategy.MEMO and not self.carries_memo:
            raise ValueError(
                f"default_match: `memo` needs transfers that carry a memo; {self.family} transfers carry none "
                "(use `address` or `amount`)"
            )
        if self.family == "utxo":
            self._coherent_utxo()
        else:
            if self.chain is not None or self.address_type is not None or self.rpc_cookie_file is not None:
                raise ValueError("chain: `chain`, `address_type` and `rpc_cookie_file` exist only on utxo networks")
            if self.xpub is not None:
                check_watch_only_key(self.xpub, self.family, where="xpub")
            pattern = _EVM_ADDRESS if self.family == "evm" else _TRON_ADDRESS
            for symbol, asset in self.assets.items():
                if asset.contract is not None and not pattern.match(asset.contract):
                    raise ValueError(f"assets.{symbol}.contract: expected a {self.family} address")
            if self.deposit_address is not None and not pattern.match(self.deposit_address):
                raise ValueError(f"deposit_address: expected a {self.family} address")
        self._check_keys()
        register_secrets(
            [self.api_key, *(e.api_key for e in self.endpoints), *self._header_values()],
            urls=[*self.rpc_urls, *([self.proxy] if self.proxy else [])],
        )
        if self.internal_transfers == "trace" and self.family != "evm":
            raise ValueError("internal_transfers: `trace` exists only on evm networks; use `off`")
        if self.internal_transfers == "trace" and not any(a.native for a in self.assets.values()):
            raise ValueError("internal_transfers: `trace` credits the native coin; add an asset with `native: true`")
        if not any(a.native for a in self.assets.values()) and not self.assets:
            raise ValueError("assets: expected at least one asset")
        return self

    def _header_values(self) -> list[str]:
        return [value for endpoint in self.endpoints for value in endpoint.headers.values()]

    def _check_keys(self) -> None:
        if self.family != "tron":
            if self.api_key is not None:
                raise ValueError(
                    "api_key: a network-wide api_key exists only on tron (TronGrid); give headers per rpc_urls entry"
                )
            for i, endpoint in enumerate(self.endpoints):
                if endpoint.api_key is not None:
                    raise ValueError(f"rpc_urls.{i}.api_key: exists only on tron; use headers for this endpoint")
            return
        if self.api_key is not None and not any(is_trongrid(url) for url in self.rpc_urls):
            raise ValueError(
                "api_key: a network-wide api_key goes only to TronGrid hosts (*.trongrid.io) and no rpc_urls entry "
                "is one; set api_key on the rpc_urls entry it belongs to"
            )

    def endpoint_headers(self, endpoint: RpcEndpoint) -> dict[str, str]:
        """The headers sent to ``endpoint``: its own, plus its key; the network's TronGrid key
        only when the endpoint is a TronGrid host and has no key of its own."""
        headers = dict(endpoint.headers)
        key = endpoint.api_key
        if key is None and self.api_key is not None and is_trongrid(endpoint.url):
            key = self.api_key
        if key is not None:
            headers[TRONGRID_KEY_HEADER] = key
        return headers

    @property
    def carries_memo(self) -> bool:
        """Whether this network's transfers carry a memo, so that the memo strategy can work."""
        return self.family in MEMO_FAMILIES

    def _coherent_utxo(self) -> NetworkConfig:
        if self.chain is None:
            raise ValueError("chain: expected one of bitcoin, litecoin, dogecoin for a utxo network")
        if self.finality is not None:
            raise ValueError("finality: utxo networks use `confirmations`")
        address_type = self.address_type or utxo_addresses.default_address_type(self.chain)
        object.__setattr__(self, "address_type", address_type)
        if address_type != "p2pkh" and utxo_addresses.params(self.chain, self.net).hrp is None:
            raise ValueError(f"address_type: {self.chain} has no segwit; use p2pkh")
        if self.xpub is not None:
            check_watch_only_key(self.xpub, self.family, where="xpub")
            utxo_addresses.check_account_key(self.xpub, self.chain, self.net, address_type, where="xpub")
        natives = [a for a in self.assets.values() if a.native]
        if len(natives) != 1 or len(self.assets) != 1:
            raise ValueError("assets: a utxo network has exactly one asset, the native coin (decimals: 8)")
        if self.deposit_address is not None:
            if not utxo_addresses.is_valid_address(self.deposit_address, self.chain, self.net):
                raise ValueError(f"deposit_address: expected a {self.chain} {self.net} address")
            hrp = utxo_addresses.params(self.chain, self.net).hrp
            if hrp and self.deposit_address.lower().startswith(hrp + "1"):  # bech32: the node prints lower case
                object.__setattr__(self, "deposit_address", self.deposit_address.lower())
        return self

    @property
    def confirmations_required(self) -> int:
        """Blocks needed on top; 0 when the network relies on its finality signal."""
        if self.finality is not None:
            return 0
        return self.confirmations if self.confirmations is not None else 12

    def asset(self, symbol: str) -> AssetConfig | None:
        return self.assets.get(symbol)

    def min_units(self, asset_key: str) -> int:
        """The smallest transfer of ``asset_key`` that may touch an invoice (1 for an unknown asset)."""
        return next((a.min_units for a in self.assets.values() if a.key == asset_key), 1)


@dataclass(frozen=True)
class AppConfig:
    """Everything configured at start: settings plus the networks file."""

    settings: Settings
    networks: dict[str, NetworkConfig]


def expand_vars(value: Any, env: dict[str, str], *, where: str) -> Any:
    """Expand ``${VAR}`` (required) and ``${VAR:-default}`` (optional) in every string value.

    Expansion happens after YAML parsing, so comments are untouched and an environment value can
    never inject YAML structure.
    """
    if isinstance(value, dict):
        return {k: expand_vars(v, env, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_vars(v, env, where=f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set (write ${{{name}:-}} to make it optional)")

    return _VAR.sub(sub, value)


def parse_networks(text: str, *, source: str, env: dict[str, str] | None = None) -> dict[str, NetworkConfig]:
    """Parse and validate a networks file; errors name ``source``, the key path and the expectation."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("networks"), dict):
        raise ConfigError(f"{source}: networks: expected a mapping of network names")
    environment = dict(os.environ) if env is None else env
    networks: dict[str, NetworkConfig] = {}
    for name, body in document["networks"].items():
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: networks.{name}: expected a mapping")
        try:
            body = expand_vars(body, environment, where=f"networks.{name}")
            networks[str(name)] = NetworkConfig.model_validate({**body, "name": str(name)})
        except ValidationError as exc:
            raise ConfigError(_describe(source, f"networks.{name}", exc)) from None
        except ConfigError as exc:  # a KeyMaterialError stays a KeyMaterialError
            message = str(exc)
            path = message if message.startswith("networks.") else f"networks.{name}.{message}"
            raise type(exc)(f"{source}: {path}") from None
    return networks


def _describe(source: str, prefix: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in (prefix, *error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        key = _LEADING_KEY.match(message) if not error["loc"] else None
        if key is not None:  # a whole-network check that names its key: fold the key into the path
            path, message = f"{path}.{key.group('key')}", key.group("rest")
        if error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{source}: {path}: {message}")
    return "\n".join(lines)


def _describe_settings(exc: ValidationError) -> str:
    """Settings errors named by their variable: ``environment: PAYWATCH_RATES_MAX_SPREAD: ...``."""
    lines = []
    for line in _describe("environment", "PAYWATCH", exc).splitlines():
        head, sep, rest = line.partition(": PAYWATCH.")
        if sep:
            name, _, message = rest.partition(": ")
            line = f"{head}: PAYWATCH_{name.split('.')[0].upper()}: {message}"
        lines.append(line)
    return "\n".join(lines)


def load_config(settings: Settings | None = None) -> AppConfig:
    """Read settings and the networks file once; raise ConfigError with a precise message."""
    try:
        settings = settings or Settings()
    except ValidationError as exc:
        raise ConfigError(_describe_settings(exc)) from None
    path = settings.networks
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the networks file ({exc.strerror})") from None
    return AppConfig(settings=settings, networks=parse_networks(text, source=str(path)))


def raw_document(data: dict[str, Any]) -> str:
    """Serialise a networks document (used by the demo and tests to write a networks file)."""
    return yaml.safe_dump(data, sort_keys=False)
