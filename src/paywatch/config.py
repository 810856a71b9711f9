"""Settings (``PAYWATCH_*``) and networks.yaml, parsed and validated once at start.

Nothing outside this module reads the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from paywatch.domain.matching import Strategy
from paywatch.errors import ConfigError, KeyMaterialError
from paywatch.keys import check_watch_only_key
from paywatch.secretbox import SecretBox, parse_keys

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TRON_ADDRESS = re.compile(r"^T[1-9A-HJ-NP-Za-km-z]{33}$")
_LEADING_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.]*): (?P<rest>.+)$", re.DOTALL)


#: placeholder passwords that must never reach a database (the shipped example once had one)
EXAMPLE_PASSWORDS = frozenset({"change-me", "changeme", "change_me"})


class Settings(BaseSettings):
    """Process settings from ``PAYWATCH_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="PAYWATCH_", extra="ignore", hide_input_in_errors=True)

    database_url: str = "sqlite:///./paywatch.db"
    networks: Path = Path("./networks.yaml")
    allow_private_callbacks: bool = False
    log_json: bool = False
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    max_lag_seconds: int = Field(default=600, gt=0)
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
    family: Literal["evm", "tron"]
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
    internal_transfers: Literal["trace", "off"] = "off"
    """``trace``: also credit coin sent by contracts (read from call traces; evm only)."""
    assets: dict[str, AssetConfig]

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

    @field_validator("xpub", "api_key", "deposit_address", mode="before")
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
        if self.xpub is not None:
            check_watch_only_key(self.xpub, self.family, where="xpub")
        pattern = _EVM_ADDRESS if self.family == "evm" else _TRON_ADDRESS
        for symbol, asset in self.assets.items():
            if asset.contract is not None and not pattern.match(asset.contract):
                raise ValueError(f"assets.{symbol}.contract: expected a {self.family} address")
        if self.deposit_address is not None and not pattern.match(self.deposit_address):
            raise ValueError(f"deposit_address: expected a {self.family} address")
        if self.internal_transfers == "trace" and self.family != "evm":
            raise ValueError("internal_transfers: `trace` exists only on evm networks; use `off`")
        if self.internal_transfers == "trace" and not any(a.native for a in self.assets.values()):
            raise ValueError("internal_transfers: `trace` credits the native coin; add an asset with `native: true`")
        if not any(a.native for a in self.assets.values()) and not self.assets:
            raise ValueError("assets: expected at least one asset")
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
