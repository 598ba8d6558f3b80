"""BundleClient: pull the cohort's bundle, verify it in the kernel, install it, report.

Network (the gRPC channel) and disk (:class:`BundleStore`, the pinned root
file) live here; every trust decision is made by
:class:`aggregation.bundle.TrustedBundleState`. A refused bundle raises its
specific :class:`~aggregation.bundle_errors.BundleRefused` after reporting
``healthy=False`` with the error's code; the previous bundle stays active.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from fedsignal.v1 import bundles_pb2, bundles_pb2_grpc

from aggregation.bundle import TrustedBundleState
from aggregation.bundle_errors import BundleRefused
from aggregation.clock import Clock
from aggregation.errors import FedsignalError
from tenant_agent.bundles.store import BundleStore, FaultHook
from tenant_agent.files import write_atomic

TUF_PAYLOAD_LOGGER = "tuf.api._payload"


class _ExpectedMissingSignatures(logging.Filter):
    """tuf logs "No signature for keyid ..." at INFO for every role key that did not sign.

    With an N-of-M threshold that is the normal case on every pull (M - N keys never sign), not a
    problem worth an operator's attention: the record is demoted to DEBUG. A real shortfall is
    raised by the kernel as a specific ``BundleRefused``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith("No signature for keyid"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_expected_tuf_logs() -> None:
    """Install the filter once (idempotent)."""
    tuf_logger = logging.getLogger(TUF_PAYLOAD_LOGGER)
    if not any(isinstance(f, _ExpectedMissingSignatures) for f in tuf_logger.filters):
        tuf_logger.addFilter(_ExpectedMissingSignatures())


class TrustRootNotPinned(FedsignalError):
    """No pinned trust root: enroll the collector first (it writes trust/root.json)."""


@dataclass(frozen=True)
class PullResult:
    status: str  # "installed" or "up_to_date"
    active_version: int
    previous_version: int
    root_version: int


class BundleClient:
    def __init__(
        self,
        channel: grpc.Channel,
        state_dir: Path | str,
        tenant_id: str,
        cohort: str,
        clock: Clock,
        *,
        timeout: float = 30.0,
        fault: FaultHook | None = None,
    ) -> None:
        self._stub = bundles_pb2_grpc.BundleServiceStub(channel)
        self._state_dir = Path(state_dir)
        self._tenant_id = tenant_id
        self._cohort = cohort
        self._clock = clock
        self._timeout = timeout
        self._store = BundleStore(self._state_dir, fault)
        self._last_report: tuple[int, bool, str] | None = None
        quiet_expected_tuf_logs()
        self._state = self._load_state()

    @property
    def root_path(self) -> Path:
        return self._state_dir / "trust" / "root.json"

    @property
    def store(self) -> BundleStore:
        return self._store

    def _load_state(self) -> TrustedBundleState:
        if not self.root_path.exists():
            raise TrustRootNotPinned(f"no pinned trust root at {self.root_path}; enroll the collector first")
        return TrustedBundleState(self.root_path.read_bytes(), self._cohort, floor_version=self._store.active_version())

    def pull(self) -> PullResult:
        """One pull: follow root rotations, verify, install atomically, report. Raises ``BundleRefused``."""
        request = bundles_pb2.GetBundleRequest(
            installed_version=self._store.active_version(), root_version=self._state.root.version
        )
        response = self._stub.GetBundle(request, timeout=self._timeout)
        if response.up_to_date:
            return self._result("up_to_date")
        try:
            for root in response.root_chain:
                trusted = self._state.update_root(bytes(root))
                write_atomic(self.root_path, trusted.to_bytes())
            artifacts = {a.name: bytes(a.content) for a in response.artifacts}
            bundle = self._state.update_bundle(bytes(response.bundle_metadata), artifacts, self._clock())
        except BundleRefused as exc:
            self._report(False, exc.code)
            raise
        if bundle.version == self._store.active_version():
            return self._result("up_to_date")
        try:
            self._store.install(bundle)
        except BaseException:
            self._state = self._load_state()  # the kernel must not believe in a bundle that is not on disk
            raise
        return self._result("installed")

    def _result(self, status: str) -> PullResult:
        self._report(True, "")
        return PullResult(status, self._store.active_version(), self._store.previous_version(), self._state.root.version)

    def _report(self, healthy: bool, detail: str) -> None:
        key = (self._store.active_version(), healthy, detail)
        if key == self._last_report:
            return  # steady state: nothing new to say
        try:
            self._stub.ReportStatus(
                bundles_pb2.ReportStatusRequest(
                    active_version=key[0], previous_version=self._store.previous_version(), healthy=healthy,
                    detail=detail,
                ),
                timeout=self._timeout,
            )
        except grpc.RpcError:
            return  # status is advisory; the next pull reports again
        self._last_report = key
