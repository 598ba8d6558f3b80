"""On-disk bundle store: atomic install, previous bundle kept, crash-safe.

Layout under ``<state_dir>/bundles``::

    versions/<version>/metadata.json     the verified bundle document
    versions/<version>/manifest.json     wire name -> artifact file
    versions/<version>/artifacts/<n>     artifact bytes
    current  -> versions/<version>       symlink, swapped with an atomic rename
    previous -> versions/<version>       the bundle that was active before

Install order: write a staging directory and fsync every file and the
directory; rename it to ``versions/<version>``; point ``previous`` at the
old current; swap ``current`` with ``os.replace`` of a fresh symlink; fsync
the parent. Until that last rename the old bundle stays current, so a crash
at any earlier point leaves it active; stale staging directories are
cleaned on the next install.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from aggregation.bundle import VerifiedBundle, verify_installed
from aggregation.bundle_errors import MalformedMetadataError
from tenant_agent.files import fsync_dir, private_dir, write_durable

try:
    import fcntl
except ImportError:  # not POSIX: one process per state directory is then the operator's job
    fcntl = None  # type: ignore[assignment]

#: Called with the step name before each install step (tests inject crashes here).
FaultHook = Callable[[str], None]
INSTALL_STEPS = ("staged", "renamed", "previous_linked", "current_swapped")
LOCK_FILE = ".lock"


def _relink(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


class BundleStore:
    """The installed bundles of one state directory.

    Installs take an exclusive ``flock`` on ``bundles/.lock``: two processes on
    one state directory (a second ``agent run``, an operator's one-off pull)
    serialize their installs instead of pruning each other's staging and
    version directories. Readers take no lock: ``current`` only ever points
    at a complete version directory.
    """

    def __init__(self, state_dir: Path, fault: FaultHook | None = None) -> None:
        self.root = Path(state_dir) / "bundles"
        self._fault = fault or (lambda _step: None)

    @property
    def current_link(self) -> Path:
        return self.root / "current"

    @property
    def previous_link(self) -> Path:
        return self.root / "previous"

    def _version_of(self, link: Path) -> int:
        if not link.is_symlink():
            return 0
        return int(Path(os.readlink(link)).name)

    def active_version(self) -> int:
        return self._version_of(self.current_link)

    def previous_version(self) -> int:
        return self._version_of(self.previous_link)

    def active_dir(self) -> Path | None:
        if not self.current_link.is_symlink():
            return None
        return self.root / os.readlink(self.current_link)

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        private_dir(self.root)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def install(self, bundle: VerifiedBundle) -> bool:
        """Install ``bundle`` and make it current; False when that version already is current."""
        with self._writer_lock():
            if bundle.version == self.active_version():
                # Another process on this state directory installed it meanwhile.
                return False
            self._install_locked(bundle)
            return True

    def _install_locked(self, bundle: VerifiedBundle) -> None:
        versions = private_dir(self.root / "versions")
        staging = self.root / f".staging-{bundle.version}-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        private_dir(staging / "artifacts")
        manifest: dict[str, str] = {}
        for i, (name, content) in enumerate(sorted(bundle.artifacts.items())):
            manifest[name] = f"artifacts/{i}"
            write_durable(staging / manifest[name], content)
        write_durable(staging / "manifest.json", json.dumps(manifest, sort_keys=True).encode("utf-8"))
        write_durable(staging / "metadata.json", bundle.metadata)
        fsync_dir(staging / "artifacts")
        fsync_dir(staging)
        self._fault("staged")
        final = versions / str(bundle.version)
        if final.exists():  # left by an install that crashed before the swap; never current
            shutil.rmtree(final)
        os.rename(staging, final)
        fsync_dir(versions)
        self._fault("renamed")
        old = os.readlink(self.current_link) if self.current_link.is_symlink() else None
        if old is not None:
            _relink(self.previous_link, old)
        self._fault("previous_linked")
        _relink(self.current_link, f"versions/{bundle.version}")
        fsync_dir(self.root)
        self._fault("current_swapped")
        self._prune()

    def _prune(self) -> None:
        keep = {os.readlink(link) for link in (self.current_link, self.previous_link) if link.is_symlink()}
        for d in (self.root / "versions").iterdir():
            if f"versions/{d.name}" not in keep:
                shutil.rmtree(d, ignore_errors=True)
        for d in self.root.glob(".staging-*"):
            shutil.rmtree(d, ignore_errors=True)

    def load(self, directory: Path) -> VerifiedBundle:
        """Read an installed bundle back through the kernel: every byte re-hashed (raises ``BundleRefused``)."""
        try:
            manifest: Mapping[str, str] = json.loads((directory / "manifest.json").read_bytes())
            if not isinstance(manifest, dict):
                raise MalformedMetadataError(f"{directory / 'manifest.json'} is not a JSON object")
            artifacts = {str(name): (directory / str(rel)).read_bytes() for name, rel in manifest.items()}
            metadata = (directory / "metadata.json").read_bytes()
        except (OSError, ValueError) as exc:
            raise MalformedMetadataError(f"installed bundle {directory.name} cannot be read: {exc}") from exc
        return verify_installed(metadata, artifacts)
