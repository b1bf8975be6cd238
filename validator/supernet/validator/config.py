"""The validator's one typed configuration (pydantic-settings).

Sources, highest first: the CLI's options, a TOML file given with ``--config`` (see
``validator/validator.sample.toml``), then ``SUPERNET_VALIDATOR_*`` environment variables for
sections the file leaves out (nested with ``__``, e.g. ``SUPERNET_VALIDATOR_CHAIN__RPC_URL``). The
CLI reads the key from ``SUPERNET_VALIDATOR_CHAIN__KEY`` when ``--key`` is not given. There is
no default key: the validator refuses to start without one.

>>> s = ValidatorSettings(chain={"deployment": "dep.json", "key": "0x" + "11" * 32})
>>> s.chain.rpc_url, s.poll_interval_s
('http://127.0.0.1:8545', 1.0)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from supernet.sdk.store import DEFAULT_STORE_URL


class ChainSettings(BaseModel):
    """Where the protocol lives and who this validator is."""

    rpc_url: str = "http://127.0.0.1:8545"
    deployment: Path = Field(description="deployment file written by `supernet contracts deploy`")
    key: SecretStr = Field(description="the validator's private key (0x hex); never logged")
    confirmations: int = Field(0, ge=0, description="blocks to stay behind the head")
    start_block: int | None = Field(None, ge=0, description="first block to scan (default: the deploy block)")

    @field_validator("key")
    @classmethod
    def _key_is_hex(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value().removeprefix("0x")
        if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
            raise ValueError("key must be 32 bytes of hex")
        return v


class ModelSettings(BaseModel):
    """The model this validator re-scores with (it checks only receipts of this model)."""

    name: str = "smollm2-135m"
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's)")
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="float32",
        description="precision of the re-scoring: float32 (default: the tight bounds for float32 "
        "nodes), bfloat16, or auto = bfloat16 where the hardware computes it natively (CUDA, CPUs "
        "with AVX512-BF16 or AMX); the tolerance follows the (node, validator) precision pair, and "
        "a bfloat16 side loosens it (docs/validator.md, Precision pairs)",
    )


class ValidatorSettings(BaseSettings):
    """Everything `supernet.validator.service.Validator` needs."""

    model_config = SettingsConfigDict(env_prefix="SUPERNET_VALIDATOR_", env_nested_delimiter="__")

    chain: ChainSettings
    model: ModelSettings = Field(default_factory=lambda: ModelSettings(threads=None))
    store_url: str = DEFAULT_STORE_URL
    db_path: Path = Path("validator.sqlite")
    poll_interval_s: float = Field(1.0, gt=0)
    challenge: bool = Field(True, description="open challenges on faulty receipts (voting always runs)")
    auto_withdraw: bool = True
    register_stake_wei: int = Field(0, ge=0, description="register as validator with this stake if not yet")
    availability_retries: int = Field(
        4, ge=1, description="fetch attempts of a missing manifest or trace before an availability challenge"
    )
    availability_backoff_s: float = Field(2.0, gt=0, description="first retry delay; doubles after each")

    @classmethod
    def from_toml(cls, path: str | Path | None, **overrides: Any) -> ValidatorSettings:
        """Settings from a TOML file (optional) with keyword overrides on top (nested dicts merge)."""
        doc: dict[str, Any] = tomllib.loads(Path(path).read_text()) if path else {}
        for key, value in overrides.items():
            if isinstance(value, dict):
                doc[key] = {**doc.get(key, {}), **{k: v for k, v in value.items() if v is not None}}
            elif value is not None:
                doc[key] = value
        return cls(**doc)
