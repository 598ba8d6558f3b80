"""Run documented command sequences (the README's, the compose file's) on this host, for real.

`fedsignal ...` commands run as subprocesses of this interpreter (`python -m fedsignal_cli`), long-running
ones (`server serve`, `agent run`) in the background until :meth:`LocalRun.stop_all`; a `fedsignal` shim
on PATH lets shell command lines (`sh -c "fedsignal ... && cp ..."`) run too.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port_pair() -> int:
    """A loopback port P with P + 1 free too (the server's enrollment port defaults to --listen + 1)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535 and _free(port + 1):
            return port
    raise RuntimeError("no free pair of loopback ports")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"background command exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@dataclass
class LocalRun:
    """One sequence of commands sharing an environment, a working directory and background processes."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    background: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cwd = self.root / "work"
        self.cwd.mkdir(parents=True, exist_ok=True)
        shim_dir = self.root / "bin"
        shim_dir.mkdir(exist_ok=True)
        shim = shim_dir / "fedsignal"
        shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m fedsignal_cli \"$@\"\n")
        shim.chmod(0o755)
        base = {k: v for k, v in os.environ.items() if not k.startswith("FEDSIGNAL_")}
        self.env = {
            **base,
            "PATH": f"{shim_dir}{os.pathsep}{base.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")]),
            **self.env,
        }

    def fedsignal(self, args: list[str], *, check: bool = True, timeout: float = 120.0) -> str:
        """Run `fedsignal ARGS`; its stdout. A non-zero exit fails with the command and its stderr."""
        self.transcript.append("fedsignal " + shlex.join(args))
        done = subprocess.run([sys.executable, "-m", "fedsignal_cli", *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"`fedsignal {shlex.join(args)}` exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def shell(self, argv: list[str], *, timeout: float = 120.0) -> str:
        """Run a non-fedsignal command line (e.g. `sh -c "..."`) with the shim on PATH."""
        self.transcript.append(shlex.join(argv))
        done = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise AssertionError(f"`{shlex.join(argv)}` exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self, argv: list[str], name: str, ports: list[int], env: dict[str, str] | None = None) -> None:
        """Start a long-running command in the background and wait until it listens on every port."""
        self.transcript.append(shlex.join(argv) + "   # in the background")
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=self.cwd, env={**self.env, **(env or {})}, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.background.append((proc, log))
        for port in ports:
            wait_for_port(port, proc, log)

    def stop_all(self) -> list[int]:
        """SIGTERM every background process (newest first), wait, and return their exit statuses."""
        codes = []
        for proc, _log in reversed(self.background):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes.append(proc.wait(timeout=40))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(timeout=10))
        self.background.clear()
        return codes
