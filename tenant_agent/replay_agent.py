"""The replay set and the replay runner wired into a running collector (configured by ``replay.toml``).

* :func:`capture` — on the record path: failing live turns become replay cases
  when the tenant enabled the replay set (nothing happens otherwise);
* :func:`tick` — on the serving loop: while the active bundle is in its replay
  phase, replay the cases captured since the last pass, in a background
  thread (one at a time), so a slow harness never holds the collector;
* :func:`close` — with the collector.

The configuration model (``ReplayConfig``) is typed through
:mod:`aggregation.typed`: unknown keys and wrong types are refused with the
file, key and line (docs/harness.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from aggregation.events import DecisionEvent
from aggregation.typed import StrictModel, load_toml
from tenant_agent.replay import HarnessClient, ReplayRun, ReplayRunner, replay_in_background
from tenant_agent.replay_set import ReplaySet, ReplaySetPolicy

log = logging.getLogger(__name__)
REPLAY_CONFIG = "replay.toml"


class ReplaySetSettings(StrictModel):
    enabled: bool = False
    retention_days: float = Field(default=30.0, gt=0)
    max_cases: int = Field(default=1000, gt=0)
    per_category_cap: int = Field(default=200, gt=0)
    refresh_minutes: float = Field(default=60.0, gt=0)
    store_redacted_text: bool = False


class HarnessSettings(StrictModel):
    url: str = ""
    timeout_seconds: float = Field(default=5.0, gt=0)
    max_cases_per_pass: int = Field(default=500, gt=0)


class ReplayConfig(StrictModel):
    replay_set: ReplaySetSettings = ReplaySetSettings()
    harness: HarnessSettings = HarnessSettings()

    def policy(self) -> ReplaySetPolicy:
        s = self.replay_set
        return ReplaySetPolicy(enabled=s.enabled, retention_seconds=s.retention_days * 86400.0,
                               max_cases=s.max_cases, per_category_cap=s.per_category_cap,
                               refresh_seconds=s.refresh_minutes * 60.0, store_redacted_text=s.store_redacted_text)


def load_replay_config(state_dir: Path) -> ReplayConfig:
    path = Path(state_dir) / REPLAY_CONFIG
    return load_toml(ReplayConfig, path) if path.exists() else ReplayConfig()


class CollectorReplay:
    """One collector's replay set, harness client and background replay."""

    def __init__(self, collector: Any, config: ReplayConfig) -> None:
        self.collector = collector
        self.config = config
        self._set: ReplaySet | None = None
        self.harness = (HarnessClient(config.harness.url, collector.tenant_id,
                                      timeout_seconds=config.harness.timeout_seconds)
                        if config.harness.url else None)
        self._thread: threading.Thread | None = None
        self.last: ReplayRun | None = None

    @property
    def replay_set(self) -> ReplaySet:
        """Opened on first use (a collector whose tenant never enabled it gets no ``replay.db``)."""
        if self._set is None:
            self._set = ReplaySet(self.collector.config.state_dir, self.config.policy(), clock=self.collector.clock)
        return self._set

    def runner(self) -> ReplayRunner:
        return ReplayRunner(self.collector, self.replay_set, self.harness,
                            max_cases=self.config.harness.max_cases_per_pass)

    def tick(self) -> threading.Thread | None:
        if self._thread is not None and self._thread.is_alive():
            return None  # the previous pass is still running (a slow harness): never two at once

        def done(run: ReplayRun | None) -> None:
            if run is not None:
                self.last = run
                if run.status not in ("ok", "no_cases"):
                    log.warning("replay of %s: %s - %s", run.candidate_id, run.status, run.message)

        self._thread = replay_in_background(self.collector, self.runner(), done)
        return self._thread

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=self.config.harness.timeout_seconds + 1)
        if self._set is not None:
            self._set.close()


def attached(collector: Any) -> CollectorReplay:
    replay = getattr(collector, "_replay", None)
    if replay is None:
        replay = CollectorReplay(collector, load_replay_config(collector.config.state_dir))
        collector._replay = replay
    return replay


def capture(collector: Any, events: Sequence[DecisionEvent],
            text_of: Callable[[DecisionEvent], str | None] | None = None) -> None:
    """Record-path hook: keep failing live turns as replay cases (only when the tenant enabled it);
    ``text_of`` as :meth:`ReplaySet.capture`."""
    replay = attached(collector)
    if replay.config.replay_set.enabled and events:
        replay.replay_set.capture(events, text_of)


def tick(collector: Any) -> None:
    """Serving-loop hook: replay new cases while the active bundle is in its replay phase."""
    replay = attached(collector)
    bundle = collector.resolver.active()
    if bundle is not None and bundle.exposure is not None and bundle.exposure.phase == "replay":
        replay.tick()


def close(collector: Any) -> None:
    replay = getattr(collector, "_replay", None)
    if replay is not None:
        replay.close()
        collector._replay = None
