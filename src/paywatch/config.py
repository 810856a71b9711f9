"""Settings (``PAYWATCH_*``) and networks.yaml, parsed and validated once at start.

Nothing outside this module reads the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paywatch.chains import utxo_addresses
from paywatch.domain.matching import Strategy
from paywatch.errors import ConfigError, KeyMaterialError
from paywatch.keys import check_watch_only_key

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TRON_ADDRESS = re.compile(r"^T[1-9A-HJ-NP-Za-km-z]{33}$")
_LEADING_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.]*): (?P<rest>.+)$", re.DOTALL)


class Settings(BaseSettings):
    """Process settings from ``PAYWATCH_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="PAYWATCH_", extra="ignore")

    database_url: str = "sqlite:///./paywatch.db"
    networks: Path = Path("./networks.yaml")
    allow_private_callbacks: bool = False
    log_json: bool = False
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    max_lag_seconds: int = Field(default=600, gt=0)


class AssetConfig(BaseModel):
    """One asset of a network: the native coin or a token contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    native: bool = False
    contract: str | None = None
    decimals: int = Field(ge=0, le=77)

    @field_validator("decimals", mode="before")
    @classmethod
    def _int_decimals(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 77:
            raise ValueError("expected an integer 0..77")
        return value

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
    rpc_urls: tuple[str, ...]
    api_key: str | None = None
    confirmations: int | None = Field(default=None, ge=1, le=10_000)
    finality: Literal["finalized", "solidified"] | None = None
    poll_interval: float = Field(default=5.0, gt=0, le=3600)
    max_block_range: int = Field(default=2000, ge=1, le=100_000)
    batch_blocks: int = Field(default=100, ge=1, le=10_000)
    start_block: int | None = Field(default=None, ge=0)
    requests_per_second: float = Field(default=10.0, gt=0)
    xpub: str | None = None
    deposit_address: str | None = None
    default_match: Strategy = Strategy.ADDRESS
    explorer_tx_url: str | None = None
    assets: dict[str, AssetConfig]
    # family utxo only (Bitcoin Core compatible nodes); see docs/utxo.md
    chain: utxo_addresses.Chain | None = None
    net: utxo_addresses.Net = "main"
    address_type: utxo_addresses.AddressType | None = None
    rpc_cookie_file: str | None = None
    body_batch: int = Field(default=25, ge=1, le=1000)
    mempool: bool = True
    mempool_max_per_poll: int = Field(default=500, ge=1, le=100_000)

    @field_validator("rpc_urls", mode="before")
    @classmethod
    def _urls(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError("expected a list of http(s) URLs")
        urls = [u for u in value if u]
        if not urls:
            raise ValueError("expected at least one non-empty URL")
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"expected an http(s) URL, got {url!r}")
        return tuple(urls)

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
        if self.family == "utxo":
            return self._coherent_utxo()
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
        if not any(a.native for a in self.assets.values()) and not self.assets:
            raise ValueError("assets: expected at least one asset")
        return self

    def _coherent_utxo(self) -> NetworkConfig:
        if self.chain is None:
            raise ValueError("chain: expected one of bitcoin, litecoin, dogecoin for a utxo network")
        if self.finality is not None:
            raise ValueError("finality: utxo networks use `confirmations`")
        if self.default_match is Strategy.MEMO:
            raise ValueError("default_match: utxo transactions carry no memo; use address or amount")
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


def load_config(settings: Settings | None = None) -> AppConfig:
    """Read settings and the networks file once; raise ConfigError with a precise message."""
    try:
        settings = settings or Settings()
    except ValidationError as exc:
        raise ConfigError(_describe("environment", "PAYWATCH", exc)) from None
    path = settings.networks
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the networks file ({exc.strerror})") from None
    return AppConfig(settings=settings, networks=parse_networks(text, source=str(path)))


def raw_document(data: dict[str, Any]) -> str:
    """Serialise a networks document (used by the demo and tests to write a networks file)."""
    return yaml.safe_dump(data, sort_keys=False)
