"""What every server component is handed: settings, store, clock, metrics, caches, the online key.

Nothing in the server reaches for a global database, clock, metrics registry
or key; tests build a ``ServerContext`` with a :class:`aggregation.clock.FakeClock`
or an in-memory store and the production path stays the tested path.

:class:`ServerSettings` is a typed value (pydantic v2 through
:mod:`aggregation.typed`): unknown keys and wrong types are refused, and every
default is written here once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, field_validator
from securesystemslib.signer import CryptoSigner, SSlibKey
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from aggregation.clock import Clock, system_clock
from aggregation.errors import FedsignalError
from aggregation.typed import StrictModel, validate
from server.db import make_engine, make_read_sessionmaker, make_sessionmaker, read_engine_of, sqlite_file_of
from server.observability import ServerMetrics

#: The server's online Ed25519 key (signs bundle metadata and audit heads), in the state directory.
ONLINE_KEY_FILE = Path("bundle-keys") / "online_ed25519.pem"


#: The SQLAlchemy drivers the server runs on (``postgresql://`` is read as psycopg, see ``server.db.make_engine``).
SUPPORTED_DATABASE_DRIVERS = frozenset({"postgresql", "postgresql+psycopg", "sqlite", "sqlite+pysqlite"})


class ServerSettings(StrictModel):
    """The server's settings; ``ServerSettings.parse(doc, source=...)`` for a document from a file."""

    database_url: str = "sqlite:///fedsignal-server.db"
    #: Directory with the CA, the server's TLS key pair and the online key.
    state_dir: Path = Path("fedsignal-server")
    listen: str = "127.0.0.1:7443"
    insecure_dev: bool = False
    #: The second, explicit switch: allow ``insecure_dev`` off loopback or on a database other than SQLite.
    insecure_dev_anywhere: bool = False
    #: Minimum distinct tenants before a merged cell is shown (k).
    min_tenants: int = Field(default=5, ge=1)
    #: Largest accepted request (and sent answer), bytes.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    #: Lifetime of signed bundle metadata, days.
    bundle_expiry_days: int = Field(default=7, ge=1)
    enrollment_token_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    #: Seconds a certificate's verdict (known, not revoked) is cached before the database is asked again.
    revocation_cache_seconds: float = Field(default=2.0, ge=0.0)
    #: Bundle-status reports (``ReportStatus``) a tenant may make per minute; more are refused.
    status_reports_per_minute: int = Field(default=12, ge=1)
    #: Seconds between signed audit-head checkpoints written by the periodic jobs.
    audit_head_interval_seconds: float = Field(default=300.0, ge=0.0)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        """PostgreSQL (psycopg) or SQLite, and for a SQLite file an existing directory: refused here,
        as one line naming the key, instead of a driver's traceback at the first connection."""
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # ValueError: a port that is no number
            raise ValueError(
                "not a database URL: give postgresql://user@host/db or sqlite:////path/to/server.db"
            ) from None
        if parsed.drivername not in SUPPORTED_DATABASE_DRIVERS:
            raise ValueError(
                f"database driver {parsed.drivername!r} is not supported: use postgresql:// (psycopg) or sqlite:///"
            )
        path = sqlite_file_of(parsed)
        if path is not None and not path.parent.is_dir():
            raise ValueError(f"the SQLite file's directory {path.parent} does not exist")
        return url

    @classmethod
    def parse(cls, doc: Any, *, source: str, text: str | None = None) -> ServerSettings:
        """Settings from a parsed document; a :class:`aggregation.typed.DataFileError` names key and line."""
        return validate(cls, doc, source=source, text=text)

    def with_changes(self, **changes: Any) -> ServerSettings:
        """A copy with ``changes``, validated like the original."""
        return type(self).model_validate({**self.model_dump(), **changes})


def load_online_signer(state_dir: Path) -> CryptoSigner:
    """The server's online Ed25519 key from ``state_dir``, created when absent.

    Creation is an exclusive create (mode 0600), so replicas starting together agree on one key.
    """
    path = Path(state_dir) / ONLINE_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise FedsignalError(f"{path} is not an Ed25519 private key")
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


#: Most serials one refresh looks up (the caller's first, then the others seen most recently).
REFRESH_BATCH = 500


class RecentSerials:
    """The certificate serials a server context authenticated lately, most recent last, with when
    this context last looked each one up.

    When one serial's cached verdict expires, those of the others seen lately are about to expire
    too: one statement looks up the caller's and every other whose verdict is past half its life
    (each verdict is then what the database said at most ``revocation_cache_seconds`` ago, as
    before), instead of one statement per caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serials: OrderedDict[str, datetime | None] = OrderedDict()
        self.refreshing = threading.Lock()

    def seen(self, serial: str) -> None:
        with self._lock:
            self._serials[serial] = self._serials.get(serial)
            self._serials.move_to_end(serial)
            if len(self._serials) > REFRESH_BATCH:
                self._serials.popitem(last=False)

    def batch(self, first: str, now: datetime, ttl: timedelta, cached: Callable[[str], bool]) -> list[str]:
        """``first`` and the recent serials whose last look-up is older than ``ttl / 2`` or whose
        verdict is not ``cached`` (none when verdicts are not cached at all)."""
        if ttl <= timedelta(0):
            return [first]
        due = now - ttl / 2
        with self._lock:
            recent = list(reversed(self._serials.items()))
        others = [s for s, at in recent if s != first and (at is None or at <= due or not cached(s))]
        return [first, *others[: REFRESH_BATCH - 1]]

    def looked_up(self, serials: list[str], at: datetime) -> None:
        with self._lock:
            for serial in serials:
                if serial in self._serials:
                    self._serials[serial] = at


class RevocationCache:
    """Certificate serial → refusal (None: may act), remembered for ``ttl`` of the context's clock.

    One per server context, so two servers in one process (tests, the demo) never share
    verdicts, and a test moves a :class:`~aggregation.clock.FakeClock` instead of sleeping.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, clock: Clock, ttl: timedelta) -> None:
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[datetime, str | None]] = {}
        #: The serials authenticated lately (``server.identity.auth`` refreshes their verdicts together).
        self.recent = RecentSerials()

    def get(self, key: str) -> tuple[bool, str | None]:
        """(hit, refusal): ``hit`` False when ``key`` is unknown or its verdict expired."""
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
        if found is not None and found[0] > now:
            return True, found[1]
        return False, None

    def put(self, key: str, refusal: str | None) -> None:
        expires = self._clock() + self._ttl
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (expires, refusal)

    def clear(self) -> None:
        """Forget every verdict (after a revocation made through this server)."""
        with self._lock:
            self._entries.clear()


@dataclass
class ServerContext:
    """One server's dependencies. Build it with :meth:`create`; tests may pass any field."""

    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock = system_clock
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    revocations: RevocationCache = field(init=False)
    #: Read-only sessions (SQLite: a snapshot without the write lock); built from ``engine``.
    read_sessions: sessionmaker[Session] = field(init=False)
    #: ``engine`` for reads only (``server.db.read_connection``: Core reads without a session).
    read_engine: Engine = field(init=False)
    #: The online key (bundle metadata, audit heads); loaded from the state directory at creation.
    online_signer: CryptoSigner = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.read_sessions = make_read_sessionmaker(self.engine)
        self.read_engine = read_engine_of(self.engine)
        self.revocations = RevocationCache(self.clock, timedelta(seconds=self.settings.revocation_cache_seconds))
        if self.online_signer is None:
            self.online_signer = load_online_signer(self.settings.state_dir)

    @classmethod
    def create(cls, settings: ServerSettings, clock: Clock = system_clock) -> ServerContext:
        """Connect to ``settings.database_url``, load (or create) the online key; nothing else starts."""
        engine = make_engine(settings.database_url)
        return cls(settings=settings, engine=engine, sessions=make_sessionmaker(engine), clock=clock)
