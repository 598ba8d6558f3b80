"""Collector configuration: one TOML file, validated once.

```toml
state_dir = "/var/lib/fedsignal"       # relative paths: relative to this file
server = "signals.example.internal:7443"
insecure_dev = false                   # plaintext + metadata identity (dev only)
privacy_unit = "session"               # or "user"; default: the cohort schema's
window_seconds = 3600                  # optional override of the schema's window
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

[release]
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
``tenant_id`` and ``cohort`` come from ``credentials/identity.json`` written
at enrollment; the file may set them for tests and offline imports. When the
state directory holds no identity yet and ``FEDSIGNAL_ENROLL_TOKEN`` is set,
``agent run`` enrolls first (with ``ca_file``, or plaintext if insecure_dev).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregation.errors import FedsignalError

IDENTITY_FILE = "credentials/identity.json"


class ConfigError(FedsignalError):
    """The collector configuration is missing or invalid."""

    exit_code = 2


@dataclass(frozen=True)
class BudgetConfig:
    rho_per_period: float = 10.0
    period: timedelta = timedelta(days=30)
    lifetime_rho: float | None = None
    # Start of the first budget period; None: fixed at the store's first use.
    anchor: datetime | None = None


@dataclass(frozen=True)
class ReleaseConfig:
    mechanism: str = "discrete_gaussian"
    rho: float = 0.01
    epsilon: float = 0.1
    delta: float = 1e-6


@dataclass(frozen=True)
class DeliveryConfig:
    backoff_base_seconds: float = 5.0
    backoff_cap_seconds: float = 3600.0
    rpc_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class LoopConfig:
    close_interval_seconds: float = 30.0
    deliver_interval_seconds: float = 10.0
    bundle_interval_seconds: float = 300.0


@dataclass(frozen=True)
class SecAggConfig:
    """``[secagg]``: the tenant's own limits under secure aggregation (see ``tenant_agent.secagg``)."""

    # Cap on the sum of the tenant's own worst-case rho (every other party colluding); None: no cap.
    own_worst_case_rho_cap: float | None = None
    # Smallest round threshold t, and smallest t / roster size, the tenant accepts.
    min_threshold: int = 2
    min_threshold_fraction: float = 0.5


@dataclass(frozen=True)
class CollectorConfig:
    state_dir: Path
    server: str | None = None
    insecure_dev: bool = False
    tenant_id: str | None = None
    cohort: str | None = None
    window_seconds: int | None = None
    close_grace_seconds: float = 0.0
    privacy_unit: str | None = None
    otlp_listen: str = "127.0.0.1:4317"
    resolve_listen: str = "127.0.0.1:8787"
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    loops: LoopConfig = field(default_factory=LoopConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    redaction_patterns: dict[str, str] = field(default_factory=dict)
    redaction_dictionaries: dict[str, list[str]] = field(default_factory=dict)
    # Records per store transaction on the import path.
    batch_size: int = 2000
    # For `agent run` enrolling itself (FEDSIGNAL_ENROLL_TOKEN): the server CA
    # to pin and the enrollment address (default: server port + 1).
    ca_file: Path | None = None
    enroll_server: str | None = None

    def __post_init__(self) -> None:
        if self.privacy_unit not in (None, "session", "user"):
            raise ConfigError(f"privacy_unit must be 'session' or 'user', not {self.privacy_unit!r}")
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise ConfigError("window_seconds must be positive")
        if self.release.mechanism not in ("discrete_gaussian", "discrete_laplace"):
            raise ConfigError(
                f"release.mechanism must be 'discrete_gaussian' or 'discrete_laplace', not {self.release.mechanism!r}"
            )
        if self.release.rho <= 0 or self.release.epsilon <= 0:
            raise ConfigError("release.rho and release.epsilon must be positive")
        if self.budget.rho_per_period <= 0:
            raise ConfigError("budget.rho_per_period must be positive")

    @classmethod
    def load(cls, path: str | Path) -> CollectorConfig:
        """Read a TOML file; raises :class:`ConfigError` naming the problem."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"collector config {path} not found (pass --config or --state-dir)") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"collector config {path} is not valid TOML: {exc}") from exc
        return cls.from_dict(doc, base=path.parent)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], base: Path | None = None) -> CollectorConfig:
        try:
            state_dir = Path(doc["state_dir"])
        except KeyError as exc:
            raise ConfigError("collector config needs state_dir") from exc
        if not state_dir.is_absolute() and base is not None:
            state_dir = base / state_dir
        try:
            b = doc.get("budget", {})
            budget = BudgetConfig(
                rho_per_period=float(b.get("rho_per_period", 10.0)),
                period=timedelta(days=float(b.get("period_days", 30))),
                lifetime_rho=float(b["lifetime_rho"]) if b.get("lifetime_rho") is not None else None,
                anchor=_parse_time(b["anchor"]) if b.get("anchor") else None,
            )
            r = doc.get("release", {})
            release = ReleaseConfig(
                mechanism=str(r.get("mechanism", "discrete_gaussian")),
                rho=float(r.get("rho", 0.01)),
                epsilon=float(r.get("epsilon", 0.1)),
                delta=float(r.get("delta", 1e-6)),
            )
            d = doc.get("delivery", {})
            delivery = DeliveryConfig(
                backoff_base_seconds=float(d.get("backoff_base_seconds", 5.0)),
                backoff_cap_seconds=float(d.get("backoff_cap_seconds", 3600.0)),
                rpc_timeout_seconds=float(d.get("rpc_timeout_seconds", 10.0)),
            )
            lp = doc.get("loops", {})
            loops = LoopConfig(
                close_interval_seconds=float(lp.get("close_interval_seconds", 30.0)),
                deliver_interval_seconds=float(lp.get("deliver_interval_seconds", 10.0)),
                bundle_interval_seconds=float(lp.get("bundle_interval_seconds", 300.0)),
            )
            sa = doc.get("secagg", {})
            secagg = SecAggConfig(
                own_worst_case_rho_cap=(float(sa["own_worst_case_rho_cap"])
                                        if sa.get("own_worst_case_rho_cap") is not None else None),
                min_threshold=int(sa.get("min_threshold", 2)),
                min_threshold_fraction=float(sa.get("min_threshold_fraction", 0.5)),
            )
            red = doc.get("redaction", {})
            return cls(
                state_dir=state_dir,
                server=doc.get("server"),
                insecure_dev=bool(doc.get("insecure_dev", False)),
                tenant_id=doc.get("tenant_id"),
                cohort=doc.get("cohort"),
                window_seconds=int(doc["window_seconds"]) if doc.get("window_seconds") else None,
                close_grace_seconds=float(doc.get("close_grace_seconds", 0.0)),
                privacy_unit=doc.get("privacy_unit"),
                otlp_listen=str(doc.get("otlp_listen", "127.0.0.1:4317")),
                resolve_listen=str(doc.get("resolve_listen", "127.0.0.1:8787")),
                budget=budget,
                release=release,
                delivery=delivery,
                loops=loops,
                secagg=secagg,
                redaction_patterns={str(k): str(v) for k, v in red.get("patterns", {}).items()},
                redaction_dictionaries={str(k): [str(x) for x in v] for k, v in red.get("dictionaries", {}).items()},
                batch_size=int(doc.get("batch_size", 2000)),
                ca_file=_path(doc.get("ca_file"), base),
                enroll_server=doc.get("enroll_server"),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"invalid collector config: {exc}") from exc

    def with_identity(self) -> CollectorConfig:
        """Fill tenant_id, cohort and server from ``credentials/identity.json`` where unset."""
        path = self.state_dir / IDENTITY_FILE
        if not path.exists():
            return self
        ident = json.loads(path.read_text())
        return replace(
            self,
            tenant_id=self.tenant_id or ident.get("tenant_id"),
            cohort=self.cohort or ident.get("cohort"),
            server=self.server or ident.get("server"),
            insecure_dev=self.insecure_dev or bool(ident.get("insecure_dev", False)),
        )


def _path(value: Any, base: Path | None) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    return base / path if base is not None and not path.is_absolute() else path


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
