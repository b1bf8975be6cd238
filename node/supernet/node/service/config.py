"""The node's one typed configuration.

Values come, highest priority first, from keyword arguments, ``SUPERNET_*`` environment
variables (nested with ``__``: ``SUPERNET_CHAIN__RPC_URL``), and a TOML file
(``supernet node run --config node.toml``; see ``node/node.example.toml``).

>>> settings = NodeSettings.load(Path("node/node.example.toml"))  # doctest: +SKIP
>>> settings.api.port
8700

No secret has a default: the node key is read from ``identity.private_key`` (better: the
``SUPERNET_IDENTITY__PRIVATE_KEY`` environment variable) or from ``identity.key_file``. The chain
is on when ``chain.enabled`` is true or either of ``chain.rpc_url`` and ``chain.deployment`` is set,
and then both are required.
"""

from __future__ import annotations

from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from supernet.node.agents.packages import AllowedAgent
from supernet.sdk.chain.bindings import DAEMON_MAX_PRIORITY_FEE
from supernet.sdk.formats.manifest import MAX_MANIFEST_ENTRIES

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("supernet_node_config_file", default=None)


MAX_PRIORITY_FEE_GWEI = DAEMON_MAX_PRIORITY_FEE // 10**9
"""The daemons' default ``[chain] max_priority_fee_gwei`` (`bindings.DAEMON_MAX_PRIORITY_FEE`)."""

MAX_PRIORITY_FEE_HELP = (
    "Gwei: the most priority fee (tip) a gas of this daemon's transactions may pay, refused above "
    "it (logged as an error: its duties protect its stake). Default 500, 10x a user's 50: a fee "
    "spike must not stop its answers, commits and reveals, and it bounds what a lying RPC takes "
    "per transaction."
)


def gwei_to_wei(gwei: float) -> int:
    """``gwei`` (a setting, possibly fractional) in wei."""
    return int(Decimal(str(gwei)) * 10**9)


class Section(BaseModel):
    """A configuration section (node and validator alike): an unknown key is an error, never a
    silent fallback to a default (``[pricing] price_per_token`` for ``price_per_token_wei`` would
    serve at the default price, ``[chain] enable`` would run off chain), and a rejected value is
    not echoed back (it may be a private key)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ApiSettings(Section):
    """Where the public API listens and how much it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, description="URL published in the registry; defaults to host:port."
    )
    max_body_bytes: int = Field(default=64 * 1024, gt=0, description="Larger request bodies get 413.")
    max_input_chars: int = Field(default=16 * 1024, gt=0, description="Longer task inputs get 413.")
    max_stream_s: float = Field(
        default=600.0,
        gt=0,
        description="Longest an event stream stays open; then it ends with `pending` and the client polls.",
    )
    stream_send_timeout_s: float = Field(
        default=30.0, gt=0, description="A stream whose reader takes no data for this long is closed."
    )
    max_unfinished_per_user: int = Field(
        default=16,
        gt=0,
        description="A user's accepted or running tasks at most (429 beyond): four times the "
        "worker's per-user slots; more would only wait, and expire unbilled.",
    )
    max_connections: int = Field(
        default=512,
        gt=0,
        description="Open connections at most (a new one evicts the oldest idle one; requests in "
        "progress beyond it get 503): below the process's file limit, so held connections never "
        "starve its RPC, store and database.",
    )

    def endpoint(self) -> str:
        """The URL users reach this node at."""
        return self.public_url or f"http://{self.host}:{self.port}"


class IdentitySettings(Section):
    """The node's signing key: receipts are signed with it, tasks are addressed to it."""

    private_key: SecretStr | None = Field(
        default=None,
        description="Hex private key: from $SUPERNET_IDENTITY__PRIVATE_KEY, never a file in git.",
    )
    key_file: Path | None = Field(default=None, description="File holding the hex private key (mode 0600).")
    keystore: Path | None = Field(
        default=None, description="Ethereum V3 keystore (mode 0600); passphrase from password_file."
    )
    password_file: Path | None = Field(
        default=None, description="The keystore's passphrase (mode 0600; default $SUPERNET_KEY_PASSWORD)."
    )


_COORDINATES = {
    "rpc_url": "--rpc, $SUPERNET_RPC_URL, $SUPERNET_CHAIN__RPC_URL or [chain] rpc_url",
    "deployment": "--deployment, $SUPERNET_DEPLOYMENT, $SUPERNET_CHAIN__DEPLOYMENT or [chain] deployment",
}
"""The chain's two coordinates, with where an operator sets each."""


def commit_margin(max_age_s: float) -> float:
    """How long after a receipt its batch may be on chain: a batch waits up to ``max_age_s`` for
    its oldest receipt, a failed commit is retried in the next, and the transaction takes its own
    time (60 s)."""
    return 2 * max_age_s + 60


class ChainSettings(Section):
    """On-chain settlement: registry, payments and batch commits.

    The chain is on when ``enabled`` is true or when either ``rpc_url`` or ``deployment`` is set
    (from any source), and then both are required: dev mode is the absence of both (``enabled =
    false`` does not turn off a chain whose coordinates are set)."""

    enabled: bool = Field(
        default=False,
        description="Settle on chain; implied by rpc_url or deployment (dev mode: neither set).",
    )
    rpc_url: str | None = None
    deployment: Path | None = Field(
        default=None, description="Deployment JSON written by `supernet contracts deploy`."
    )
    auto_register: bool = Field(
        default=False, description="Register this node (and stake) on start if not registered."
    )
    stake_wei: int = Field(
        default=0, ge=0, description="Stake to hold; topped up on start when register is on."
    )
    chain_id: int = Field(
        default=31337, description="EIP-712 chain id when the chain is disabled (dev mode)."
    )
    max_priority_fee_gwei: float = Field(
        default=MAX_PRIORITY_FEE_GWEI, gt=0, description=MAX_PRIORITY_FEE_HELP
    )
    reorg_watch: int = Field(
        default=64,
        ge=0,
        description="Blocks during which each batch commit is re-checked after it lands: a commit "
        "whose block a reorg orphaned is looked up again by root (its new batch id stored) or, "
        "gone, committed again. At least the chain's deepest reorg; 0: never re-checked.",
    )

    def tip_ceiling(self) -> int:
        """``max_priority_fee_gwei`` in wei: the tip ceiling of every transaction the node signs."""
        return gwei_to_wei(self.max_priority_fee_gwei)

    @model_validator(mode="after")
    def _on_when_configured(self) -> ChainSettings:
        # Checked on the merged sources (keyword arguments and the CLI's flags, the environment,
        # the TOML): either coordinate, from anywhere, means the chain. Half of them once started
        # the node in dev mode without a word (tests/unit/test_review_operator_tools.py, 2).
        given = [name for name in _COORDINATES if getattr(self, name)]
        if given:
            self.enabled = True
        if not self.enabled:
            return self
        missing = [name for name in _COORDINATES if not getattr(self, name)]
        if missing:
            why = f"chain.{given[0]} is set" if given else "chain.enabled is true"
            raise ValueError(
                f"the chain is on ({why}) but {' and '.join('chain.' + m for m in missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set: set "
                + "; ".join(_COORDINATES[m] for m in missing)
                + (" (dev mode, off chain: set neither)" if given else " (dev mode: chain.enabled = false)")
            )
        return self


class StoreSettings(Section):
    """The content store: a Kubo RPC URL, or an embedded on-disk store."""

    url: str | None = Field(default=None, description="Kubo RPC (or `supernet store serve`) URL.")
    embedded_path: Path | None = Field(
        default=None, description="Embedded store directory (default data_dir/store)."
    )
    embedded_port: int = Field(
        default=0, ge=0, le=65535, description="Port of the embedded store (0: any free)."
    )
    public_url: str | None = Field(
        default=None,
        description="Read-only store URL advertised to users and validators (default: the read-only "
        "/v1/store of this node's API; never the store's RPC, which also deletes blocks).",
    )


Dtype = Literal["auto", "float32", "bfloat16", "float16-weights", "int8-weights"]


class ModelSettings(Section):
    """One model the node serves (an ``[[engine.models]]`` entry): its own engine and batch."""

    model: str = Field(description="Catalog name or local path of the model.")
    dtype: Dtype = Field(
        default="auto",
        description="Compute format (auto = int8-weights on CPU: int8 rows on a float16 grid, float32 "
        "activations; bfloat16 on CUDA); the served id names it.",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Its name in the OpenAI API (`model`) and GET /v1/node `modelNames`; default: the "
        "catalog or directory name, with `@<compute format>` added when two entries share it.",
    )


class EngineSettings(Section):
    """Which models the node serves and how they run.

    One model: ``model`` and ``dtype``. Several: one ``[[engine.models]]`` entry each (then
    ``model`` and ``dtype`` are not set); every entry is an LLM core of the one kernel (its own
    engine and continuous batch, the kernel's memory, storage, tools and access shared), and
    tasks and chat completions go to the core of the model id they name. The other settings
    here apply to every model.
    """

    model: str = Field(default="smollm2-135m", description="Catalog name or local path of the model.")
    models: list[ModelSettings] = Field(
        default_factory=list,
        description="Several models, one entry each ([[engine.models]]); the first is the default "
        "(listed first: the SDK signs for it when a user names no model). Empty: the one of `model` "
        "and `dtype`.",
    )
    max_new_tokens: int = Field(
        default=128, gt=0, le=4096, description="Cap on tokens generated per LLM call."
    )
    agents: list[str] = Field(default_factory=lambda: ["chat"], description="Agent ids this node runs.")
    dtype: Dtype = Field(
        default="auto",
        description="Compute format: auto = int8-weights on CPU (int8 rows on a float16 grid, float32 "
        "activations and sums), bfloat16 on CUDA; or float16-weights, float32. The served model id "
        "names it (each format serves "
        "another id; validators hold each to its own).",
    )
    policy: Literal["fair", "fifo", "rr"] = Field(
        default="fair",
        description="LLM-call scheduling: fair (fee-weighted fair share), fifo, rr (round robin); "
        "each model's batch has its own scheduler.",
    )

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> EngineSettings:
        if self.models and {"model", "dtype"} & self.model_fields_set:
            raise ValueError("engine: set either model/dtype (one model) or [[engine.models]], not both")
        names = [m.name for m in self.models if m.name is not None]
        if len(set(names)) != len(names):
            raise ValueError("engine.models: names must be unique")
        return self

    def served(self) -> list[ModelSettings]:
        """The models to serve, the default first."""
        return list(self.models) or [ModelSettings(model=self.model, dtype=self.dtype)]


class KernelSettings(Section):
    """How the kernel's managers hold agents' state."""

    memory_working_set: int = Field(
        default=1024,
        ge=1,
        description="Memory entries of one agent namespace (user and agent) held in RAM at most; "
        "the rest stay in the content store and are paged back in on access (K-LRU).",
    )
    memory_resident_entries: int = Field(
        default=8192,
        ge=1,
        description="Memory entries held in RAM at most, all namespaces together: past it the working "
        "sets of the namespaces used longest ago are dropped (every user address is a namespace).",
    )
    memory_k: int = Field(
        default=2,
        ge=1,
        le=16,
        description="The K of the memory working set's LRU-K replacement: an entry is ranked by its "
        "K-th most recent access (1: plain LRU).",
    )


class AgentsSettings(Section):
    """Agents from installed packages (the ``supernet.agents`` entry-point group; docs/agents.md).

    Only the entry points named here are imported, and each only at the code hash given: a package
    that changed since is refused (logged), as is one that fails to import or takes a built-in's id.
    The built-in agents are governed by ``[engine] agents``.
    """

    allow: list[AllowedAgent] = Field(
        default_factory=list,
        description='Packaged agents this node runs: [{id = ..., code_hash = "0x..."}] '
        "(`python -m supernet.node.agents.packages` lists the installed ones with their code hashes).",
    )


class PricingSettings(Section):
    """What a task costs.

    The registry publishes a price per generated token; a task is charged its whole token
    budget up front (``price_per_token_wei * tokens_per_task``), so the fee is known before
    the user signs (``maxFee``) and the cumulative voucher can be exact.
    """

    price_per_token_wei: int = Field(default=10**9, ge=0)
    tokens_per_task: int = Field(default=1000, gt=0, le=2**53 - 1)  # a limit of the signed agent profile

    @property
    def task_fee_wei(self) -> int:
        """The fee of one task."""
        return self.price_per_token_wei * self.tokens_per_task


class BatchSettings(Section):
    """When receipts are committed: a full batch, or the oldest pending receipt is this old."""

    max_size: int = Field(default=16, gt=0, le=MAX_MANIFEST_ENTRIES)  # TaskManager.MAX_BATCH_COUNT
    max_age_s: float = Field(default=10.0, gt=0)
    promise_s: int = Field(
        default=600,
        gt=0,
        description=(
            "Each receipt comes with the node's signed promise to commit it within this many seconds "
            "(slashable when broken: OmissionManager). Keep it well above max_age_s and at most the "
            "chain's CHALLENGE_WINDOW, so the batch is still on chain when a claim is answered. At "
            "least commit_margin_s (2 * max_age_s + 60): a receipt's batch is committed up to two "
            "batch ages after it, plus the commit's own time."
        ),
    )

    @property
    def commit_margin_s(self) -> float:
        """How long after a receipt its batch may be on chain (`commit_margin`)."""
        return commit_margin(self.max_age_s)

    @model_validator(mode="after")
    def _commit_within_the_pin_age(self) -> BatchSettings:
        # a chain read of the head is a finding when its pin is more than MAX_PIN_AGE_S older
        # than the commit; the pin may already lag by STALE_FINAL_S, and a task runs up to an hour
        from supernet.node.kernel.chain_read import MAX_PIN_AGE_S, STALE_FINAL_S

        room = MAX_PIN_AGE_S - STALE_FINAL_S - 3600
        if self.commit_margin_s > room:
            raise ValueError(
                f"batch.max_age_s ({self.max_age_s:g}) lets a batch reach the chain "
                f"{self.commit_margin_s:g} s after its receipt, past the {room} s a chain read's pin "
                f"may age before it (the protocol's {MAX_PIN_AGE_S} s, less finality's lag and a task)"
            )
        return self

    @model_validator(mode="after")
    def _promise_after_commit(self) -> BatchSettings:
        # a promise due before the batch can be on chain is broken by an honest node: every
        # receipt becomes a slashable omission claim
        if self.promise_s < self.commit_margin_s:
            raise ValueError(
                f"batch.promise_s ({self.promise_s}) must be at least 2 * batch.max_age_s + 60 "
                f"({self.commit_margin_s:g}): a receipt's batch may reach the chain that late"
            )
        return self


class RedeemSettings(Section):
    """How often vouchers are redeemed on chain."""

    interval_s: float = Field(default=60.0, gt=0)
    worth_factor: int = Field(
        default=250, ge=0, description="Redeem a user owing at least this many times the voucher's gas cost."
    )
    min_amount_wei: int = Field(
        default=0, ge=0, description="A fixed threshold instead of worth_factor (0: use worth_factor)."
    )


class DecoySettings(Section):
    """Decoys: the node's way of paying the validators who check it (docs/security-parameters.md
    "Paying validators"; `supernet.node.service.decoys`). Only on a chain."""

    enabled: bool = Field(default=True, description="Plant decoys (the escrow is spent either way).")
    share: float = Field(default=0.02, gt=0, le=0.5, description="At most this fraction of tasks are decoys.")
    escrow_wei: int = Field(
        default=0, ge=0, description="Fund the verification escrow up to this on start (fees also fill it)."
    )
    inputs: list[str] = Field(
        default_factory=list, description="Decoy inputs (default: the node's recent inputs, then built-ins)."
    )
    interval_s: float = Field(default=5.0, gt=0, description="Seconds between planting and revealing steps.")


class McpServerSettings(Section):
    """One MCP server whose tools the node offers (``[[mcp.servers]]``; docs/node.md)."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Its tools are registered as `<name>.<tool>`."
    )
    transport: Literal["stdio", "http"] = "stdio"
    command: str | None = Field(default=None, description="stdio: the program the node launches.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, str] = Field(
        default_factory=dict, description="stdio: extra environment (the node's own is not passed on)."
    )
    url: str | None = Field(default=None, description="http: the Streamable HTTP endpoint.")
    timeout_s: float = Field(default=30.0, gt=0, description="Bound of one tool call.")
    connect_timeout_s: float = Field(default=30.0, gt=0, description="Bound of starting and listing.")
    max_concurrency: int = Field(default=4, ge=1, description="Calls to this server at once (all tools).")
    deterministic: list[str] = Field(
        default_factory=list,
        description="Tools declared deterministic (marked so in traces): names as the server lists "
        "them, without the `<name>.` prefix.",
    )
    irreversible: list[str] = Field(
        default_factory=list,
        description="Tools that need the task owner's signed confirmation: names as the server lists "
        "them, without the `<name>.` prefix; a name it does not list stops the node's start.",
    )
    allow: list[str] | None = Field(default=None, description="Tools to offer (default: all it lists).")
    max_result_bytes: int = Field(default=64 * 1024, gt=0, description="Largest result (compact JSON).")

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerSettings:
        if self.transport == "stdio" and not self.command:
            raise ValueError(f"mcp server {self.name}: transport stdio needs command")
        if self.transport == "http" and not self.url:
            raise ValueError(f"mcp server {self.name}: transport http needs url")
        from supernet.node.kernel.mcp_tools import listed_name_problem

        for key in ("irreversible", "deterministic"):
            for tool in getattr(self, key):
                problem = listed_name_problem(self.name, key, tool)
                if problem:  # a prefixed name matches no tool: ignored, it would fail open
                    raise ValueError(problem)
        return self


class McpSettings(Section):
    """The operator's MCP servers (tools from the Model Context Protocol)."""

    servers: list[McpServerSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> McpSettings:
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError("mcp server names must be unique")
        return self


class AccessGroupSettings(Section):
    """One privilege group (``[[access.groups]]``): which agents may use which tools and areas."""

    name: str = Field(min_length=1, max_length=64)
    agents: list[str] = Field(
        description="Agent ids in the group, exactly (case aside; no globs); each one an agent the "
        "node runs, or the node does not start."
    )
    tools: list[str] = Field(
        default_factory=list,
        description='Tool names or fnmatch globs the members may use ("calculator", "mcp_files.*").',
    )
    memory: bool = Field(default=False, description="Whether members get a memory.")
    storage: bool = Field(default=False, description="Whether members get files.")

    @model_validator(mode="after")
    def _no_agent_globs(self) -> AccessGroupSettings:
        globs = [a for a in self.agents if any(c in a for c in "*?[]")]
        if globs:  # read like the tools' globs, they would match no agent: confine nobody
            raise ValueError(
                f"access group {self.name!r}: agents {globs} look like globs; a group names agent "
                "ids exactly (only its tools may be globs)"
            )
        return self


class AccessSettings(Section):
    """Access rules on top of each task's signed request (docs/agents.md, "Access").

    An agent named by one or more groups gets only what they allow (the union of their tools,
    memory, files); an agent in no group keeps the defaults: every tool the task asked for, a
    memory and files.
    """

    groups: list[AccessGroupSettings] = Field(default_factory=list)
    confirmation_timeout_s: float | None = Field(
        default=300.0,
        gt=0,
        description="How long a call of an irreversible tool waits for its user's confirmation "
        "(POST /v1/tasks/{id}/confirmations) before it fails; unset: refused at once.",
    )
    max_paused_calls: int = Field(
        default=8,
        ge=0,
        description="Calls waiting for their users' confirmations at once, over all tasks (each "
        "keeps its task's worker slot); one more is refused at once. Keep it below the worker's "
        "concurrency (16), so that users who never confirm cannot hold every slot.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AccessSettings:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError("access group names must be unique")
        return self


class NodeSettings(BaseSettings):
    """Everything a node needs to run."""

    model_config = SettingsConfigDict(
        env_prefix="SUPERNET_", env_nested_delimiter="__", extra="forbid", hide_input_in_errors=True
    )

    data_dir: Path = Field(
        default=Path(".supernet/node"), description="SQLite database, node key, embedded store."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    api: ApiSettings = Field(default_factory=ApiSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    kernel: KernelSettings = Field(default_factory=KernelSettings)
    agents: AgentsSettings = Field(default_factory=AgentsSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    redeem: RedeemSettings = Field(default_factory=RedeemSettings)
    decoys: DecoySettings = Field(default_factory=DecoySettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)

    @model_validator(mode="after")
    def _identity_when_chain(self) -> NodeSettings:
        ident = self.identity
        if (
            self.chain.enabled
            and ident.private_key is None
            and ident.key_file is None
            and ident.keystore is None
        ):
            raise ValueError(
                "chain.enabled needs identity.private_key, identity.key_file or identity.keystore"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then environment, then the TOML file given to :meth:`load`."""
        sources = [init_settings, env_settings, dotenv_settings, file_secret_settings]
        path = _CONFIG_FILE.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, path: Path | None = None, **overrides: object) -> NodeSettings:
        """Build the settings from ``path`` (TOML), the environment and ``overrides``.

        Raises:
            FileNotFoundError: ``path`` is given and does not exist.
        """
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        token = _CONFIG_FILE.set(path)
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        finally:
            _CONFIG_FILE.reset(token)

    def store_dir(self) -> Path:
        """Directory of the embedded store when no path is configured."""
        return self.store.embedded_path or self.data_dir / "store"
