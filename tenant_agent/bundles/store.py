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

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from aggregation.bundle import VerifiedBundle, parse_bundle_view

#: Called with the step name before each install step (tests inject crashes here).
FaultHook = Callable[[str], None]
INSTALL_STEPS = ("staged", "renamed", "previous_linked", "current_swapped")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _relink(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


class BundleStore:
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

    def install(self, bundle: VerifiedBundle) -> None:
        versions = self.root / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{bundle.version}-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        (staging / "artifacts").mkdir(parents=True)
        manifest: dict[str, str] = {}
        for i, (name, content) in enumerate(sorted(bundle.artifacts.items())):
            manifest[name] = f"artifacts/{i}"
            _write(staging / manifest[name], content)
        _write(staging / "manifest.json", json.dumps(manifest, sort_keys=True).encode("utf-8"))
        _write(staging / "metadata.json", bundle.metadata)
        _fsync_dir(staging / "artifacts")
        _fsync_dir(staging)
        self._fault("staged")
        final = versions / str(bundle.version)
        if final.exists():  # left by an install that crashed before the swap; never current
            if self.active_version() == bundle.version:
                shutil.rmtree(staging)
                return
            shutil.rmtree(final)
        os.rename(staging, final)
        _fsync_dir(versions)
        self._fault("renamed")
        old = os.readlink(self.current_link) if self.current_link.is_symlink() else None
        if old is not None:
            _relink(self.previous_link, old)
        self._fault("previous_linked")
        _relink(self.current_link, f"versions/{bundle.version}")
        _fsync_dir(self.root)
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
        manifest: Mapping[str, str] = json.loads((directory / "manifest.json").read_bytes())
        artifacts = {name: (directory / rel).read_bytes() for name, rel in manifest.items()}
        return parse_bundle_view((directory / "metadata.json").read_bytes(), artifacts)

    def load_active(self) -> VerifiedBundle | None:
        d = self.active_dir()
        return self.load(d) if d is not None else None
