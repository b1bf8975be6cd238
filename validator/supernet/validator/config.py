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

from eth_account.signers.local import LocalAccount
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from supernet.node.service.config import (
    MAX_PRIORITY_FEE_GWEI,
    MAX_PRIORITY_FEE_HELP,
    McpServerSettings,
    Section,
    gwei_to_wei,
)
from supernet.sdk.keys import load_account
from supernet.sdk.store import DEFAULT_STORE_URL

MAX_POLL_INTERVAL_S = 60.0
"""The longest wait between two steps, and between two rounds of reveals. A sealed vote must be
opened within its reveal phase (a third of the vote window) and claims are followed within their
answer windows, so a poll interval is a matter of seconds: a longer one (``inf``, ``1e12``, or
milliseconds given for seconds) would leave the validator asleep after its first step while
``/healthz``, stale only after ten polls, still said ``ok``."""


class ChainSettings(Section):
    """Where the protocol lives and who this validator is."""

    rpc_url: str = "http://127.0.0.1:8545"
    deployment: Path = Field(description="deployment file written by `supernet contracts deploy`")
    key: SecretStr | None = Field(None, description="the validator's private key (0x hex); never logged")
    key_file: Path | None = Field(None, description="file holding the hex private key (mode 0600)")
    keystore: Path | None = Field(None, description="Ethereum V3 keystore (passphrase: password_file)")
    password_file: Path | None = Field(
        None, description="the keystore's passphrase (mode 0600; default $SUPERNET_KEY_PASSWORD)"
    )
    confirmations: int = Field(0, ge=0, description="blocks to stay behind the head")
    start_block: int | None = Field(
        None,
        ge=0,
        description="first block whose batches are sampled (default: the deploy block); earlier "
        "batches are still followed, for the origin check's receipt index",
    )
    max_priority_fee_gwei: float = Field(MAX_PRIORITY_FEE_GWEI, gt=0, description=MAX_PRIORITY_FEE_HELP)

    @field_validator("key")
    @classmethod
    def _key_is_hex(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        raw = v.get_secret_value().removeprefix("0x")
        if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
            raise ValueError("key must be 32 bytes of hex")
        return v

    @model_validator(mode="after")
    def _one_key_source(self) -> ChainSettings:
        sources = [x for x in (self.key, self.key_file, self.keystore) if x is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of chain.key, chain.key_file and chain.keystore")
        return self

    def tip_ceiling(self) -> int:
        """``max_priority_fee_gwei`` in wei: the tip ceiling of every transaction the validator
        signs (its claims, votes and reveals protect its bonds)."""
        return gwei_to_wei(self.max_priority_fee_gwei)

    def account(self) -> LocalAccount:
        """The validator's signer (`supernet.sdk.keys.load_account`).

        Raises:
            supernet.sdk.keys.KeyLoadError: the key file or keystore cannot be used.
        """
        return load_account(
            key=self.key.get_secret_value() if self.key is not None else None,
            key_file=self.key_file,
            keystore=self.keystore,
            password_file=self.password_file,
        )


class ModelSettings(Section):
    """The model this validator re-scores with (it checks only receipts of this model)."""

    name: str = "smollm2-135m"
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's)")
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16-weights", "int8-weights"] = Field(
        default="auto",
        description="format of the first re-scoring: auto = bfloat16 where the hardware computes it "
        "natively (CUDA, CPUs with AVX512-BF16 or AMX), else the format nodes on this device serve by "
        "default (int8-weights on CPU). A bfloat16 scorer is a screen: every call it does not accept "
        "is re-scored by an exact copy of the model, whose verdict decides. Whatever is set here, a "
        "float32, float16-weights or int8-weights node is finally judged in its own format, loaded on "
        "first use "
        "(docs/validator.md, Screen and arbiter)",
    )
    arbiter_sample: int = Field(
        default=1,
        ge=1,
        description="with a bfloat16 screen: calls per receipt of a float32 or float16-weights node the "
        "exact arbiter re-scores although the screen accepts them, drawn at random (unpredictable to the "
        "node) among the accepted ones, so bfloat16 compute sold under an exact id is caught",
    )
    arbiter_sample_fraction: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="draw this fraction of the accepted calls instead (rounded up) where it is more. "
        "The default, 1, re-scores every call of such a node in its own format: the screen's sampled "
        "bound (0.05 of CDF mass) is a window a node can steer a token in, 250x the exact one; lower it "
        "only to trade that for cost (docs/validator.md, Random arbiter sample)",
    )


class ValidatorSettings(BaseSettings):
    """Everything `supernet.validator.service.Validator` needs."""

    model_config = SettingsConfigDict(
        env_prefix="SUPERNET_VALIDATOR_", env_nested_delimiter="__", extra="forbid", hide_input_in_errors=True
    )

    chain: ChainSettings
    model: ModelSettings = Field(default_factory=lambda: ModelSettings(threads=None))
    store_url: str = DEFAULT_STORE_URL
    db_path: Path = Path("validator.sqlite")
    poll_interval_s: float = Field(
        1.0,
        gt=0,
        le=MAX_POLL_INTERVAL_S,
        allow_inf_nan=False,
        description=f"seconds between steps (and rounds of reveals), at most {MAX_POLL_INTERVAL_S:.0f}",
    )
    challenge: bool = Field(True, description="open challenges on faulty receipts (voting always runs)")
    auto_withdraw: bool = True
    register_stake_wei: int = Field(0, ge=0, description="register as validator with this stake if not yet")
    availability_retries: int = Field(
        4, ge=1, description="fetch attempts of a missing manifest or trace before an availability challenge"
    )
    availability_backoff_s: float = Field(2.0, gt=0, description="first retry delay; doubles after each")
    http_port: int | None = Field(
        None, ge=0, le=65535, description="serve /healthz and /metrics on this port (None: off)"
    )
    http_host: str = Field("127.0.0.1", description="address of the /healthz and /metrics server")
    mcp_servers: list[McpServerSettings] = Field(
        default_factory=list,
        description="MCP servers whose tools this validator re-runs when a trace records a call to them "
        "as deterministic and this list declares the tool deterministic too (same format as the node's "
        "[[mcp.servers]]; docs/validator.md)",
    )
    mcp_rerun_budget_s: float = Field(
        60.0,
        gt=0,
        description="seconds one receipt's MCP re-runs may take together; later MCP calls of that receipt "
        "are skipped, not accused (a trace chooses how many slow calls it records)",
    )

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
