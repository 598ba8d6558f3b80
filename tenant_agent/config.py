"""Collector configuration: one TOML file, validated once.

```toml
state_dir = "/var/lib/fedsignal"       # relative paths: relative to this file
server = "signals.example.internal:7443"
insecure_dev = false                   # plaintext + metadata identity (dev only)
privacy_unit = "session"               # or "user"; default: the cohort schema's
window_seconds = 3600                  # optional; must equal the cohort schema's window
close_grace_seconds = 60               # wait this long after a window ends
otlp_listen = "127.0.0.1:4317"
resolve_listen = "127.0.0.1:8787"
ca_file = "server-ca.pem"               # only for `agent run` self-enrollment
enroll_server = "signals.example.internal:7444"   # default: server port + 1

[budget]
rho_per_period = 10.0                   # covers 720 hourly windows at rho 0.01, with headroom
period_days = 30
lifetime_rho = 100.0                   # optional
anchor = "2026-01-01T00:00:00+00:00"   # optional; default: first start

[release]                              # the cohort schema's noise scale wins; these calibrate a schema without one
mechanism = "discrete_gaussian"        # or "discrete_laplace"
rho = 0.01                             # per window (Gaussian): sigma 28 at L0=16, Linf=1
epsilon = 0.1                          # per window (Laplace): rho 0.005 on the ledger
delta = 1e-6

[delivery]
backoff_base_seconds = 5
backoff_cap_seconds = 3600

[loops]
close_interval_seconds = 30
deliver_interval_seconds = 10
bundle_interval_seconds = 300

[redaction.patterns]
ticket_id = "TCK-[0-9]{6}"
[redaction.dictionaries]
customer_name = ["Alice Example"]
```
Every key is typed (``tenant_agent.config`` models over
``aggregation.typed``): an unknown key, a misspelt one or a value of the
wrong type (``insecure_dev = "false"``) is refused with the file, the line
and the key. The defaults are the ones of the models below, written once.

``tenant_id`` and ``cohort`` come from ``credentials/identity.json`` written
at enrollment; the file may set them for tests and offline imports. When the
state directory holds no identity yet and ``FEDSIGNAL_ENROLL_TOKEN`` is set,
``agent run`` enrolls first (with ``ca_file``, or plaintext if insecure_dev).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from aggregation.budget import default_lifetime_rho
from aggregation.errors import FedsignalError
from aggregation.typed import DataFileError, StrictModel, load_toml, validate

IDENTITY_FILE = "credentials/identity.json"

Mechanism = Literal["discrete_gaussian", "discrete_laplace"]
PrivacyUnit = Literal["session", "user"]


class ConfigError(FedsignalError):
    """The collector configuration is missing or invalid."""

    exit_code = 2


class BudgetConfig(StrictModel):
    """``[budget]``: the tenant's zCDP budget per renewal period (and over its lifetime)."""

    rho_per_period: PositiveFloat = 10.0
    period_days: PositiveFloat = 30.0
    # Unset: aggregation.budget.default_lifetime_rho(rho_per_period), ten periods' budgets;
    # None (in code) removes the cap, only when asked for.
    lifetime_rho: PositiveFloat | None = None
    # Start of the first budget period; None: fixed at the store's first use.
    anchor: datetime | None = None

    @field_validator("anchor")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # A TOML local date-time has no zone: it means UTC, as everywhere in fedsignal.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _default_lifetime_cap(self) -> BudgetConfig:
        if "lifetime_rho" not in self.model_fields_set:
            object.__setattr__(self, "lifetime_rho", default_lifetime_rho(self.rho_per_period))
        return self

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.period_days)


class ReleaseConfig(StrictModel):
    """``[release]``: the per-window DP mechanism and its privacy parameter."""

    mechanism: Mechanism = "discrete_gaussian"
    rho: PositiveFloat = 0.01
    epsilon: PositiveFloat = 0.1
    delta: float = Field(default=1e-6, gt=0.0, lt=1.0)


class DeliveryConfig(StrictModel):
    """``[delivery]``: outbox retries."""

    backoff_base_seconds: PositiveFloat = 5.0
    backoff_cap_seconds: PositiveFloat = 3600.0
    rpc_timeout_seconds: PositiveFloat = 10.0


class LoopConfig(StrictModel):
    """``[loops]``: how often ``agent run`` closes windows, delivers and pulls bundles."""

    close_interval_seconds: PositiveFloat = 30.0
    deliver_interval_seconds: PositiveFloat = 10.0
    bundle_interval_seconds: PositiveFloat = 300.0


class SecAggConfig(StrictModel):
    """``[secagg]``: the tenant's own limits under secure aggregation (see ``tenant_agent.secagg``)."""

    # Cap on the sum of the tenant's own worst-case rho (every other party colluding); None: no cap.
    own_worst_case_rho_cap: PositiveFloat | None = None
    # Smallest round threshold t, and smallest t / roster size, the tenant accepts.
    min_threshold: PositiveInt = 2
    min_threshold_fraction: float = Field(default=0.5, ge=0.0, le=1.0)


class RedactionSettings(StrictModel):
    """``[redaction.patterns]`` (name = regex) and ``[redaction.dictionaries]`` (name = [terms])."""

    patterns: dict[str, str] = Field(default_factory=dict)
    dictionaries: dict[str, list[str]] = Field(default_factory=dict)


class CollectorConfig(StrictModel):
    """The collector's configuration; build it with :meth:`load` (a TOML file) or as a value in code."""

    state_dir: Path
    server: str | None = None
    insecure_dev: bool = False
    tenant_id: str | None = None
    cohort: str | None = None
    # Must equal the cohort schema's window (checked when the collector starts).
    window_seconds: PositiveInt | None = None
    close_grace_seconds: float = Field(default=0.0, ge=0.0)
    privacy_unit: PrivacyUnit | None = None
    otlp_listen: str = "127.0.0.1:4317"
    resolve_listen: str = "127.0.0.1:8787"
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    loops: LoopConfig = Field(default_factory=LoopConfig)
    secagg: SecAggConfig = Field(default_factory=SecAggConfig)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    # Records per store transaction on the import path.
    batch_size: PositiveInt = 2000
    # For `agent run` enrolling itself (FEDSIGNAL_ENROLL_TOKEN): the server CA
    # to pin and the enrollment address (default: server port + 1).
    ca_file: Path | None = None
    enroll_server: str | None = None
    # A PostgreSQL store shared by several collector processes of this tenant
    # (replicas); None: the SQLite file in state_dir.
    store_url: str | None = None

    @field_validator("store_url")
    @classmethod
    def _postgresql_store(cls, url: str | None) -> str | None:
        from tenant_agent.store_models import store_url_problem

        problem = None if url is None else store_url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url

    @classmethod
    def load(cls, path: str | Path) -> CollectorConfig:
        """Read a TOML file; raises :class:`ConfigError` naming the file, line and key of each problem."""
        path = Path(path)
        try:
            config = load_toml(cls, path)
        except DataFileError as exc:
            if not path.exists():
                raise ConfigError(f"collector config {path} not found (pass --config or --state-dir)") from None
            raise ConfigError(_one_line(exc)) from None
        return config.relative_to(path.parent)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], base: Path | None = None, *, source: str = "collector config",
                  text: str | None = None) -> CollectorConfig:
        """Validate a parsed document (``text``: its TOML source, for line numbers)."""
        try:
            config = validate(cls, doc, source=source, text=text)
        except DataFileError as exc:
            raise ConfigError(_one_line(exc)) from None
        return config.relative_to(base) if base is not None else config

    def relative_to(self, base: Path) -> CollectorConfig:
        """Relative ``state_dir`` and ``ca_file`` resolved against ``base`` (the config file's folder)."""
        update: dict[str, Path] = {}
        if not self.state_dir.is_absolute():
            update["state_dir"] = base / self.state_dir
        if self.ca_file is not None and not self.ca_file.is_absolute():
            update["ca_file"] = base / self.ca_file
        return self.model_copy(update=update) if update else self

    def with_identity(self) -> CollectorConfig:
        """Fill tenant_id, cohort and server from ``credentials/identity.json`` where unset."""
        path = self.state_dir / IDENTITY_FILE
        if not path.exists():
            return self
        try:
            ident = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} cannot be read ({exc}); re-enroll with `fedsignal agent enroll --force`") from exc
        return self.model_copy(
            update={
                "tenant_id": self.tenant_id or ident.get("tenant_id"),
                "cohort": self.cohort or ident.get("cohort"),
                "server": self.server or ident.get("server"),
                "insecure_dev": self.insecure_dev or bool(ident.get("insecure_dev", False)),
            }
        )


def _one_line(exc: DataFileError) -> str:
    """Every problem of the file, on one line (the CLI prints errors as one line)."""
    return "; ".join(str(exc).splitlines())
