"""What every server component is handed: store, clock, settings.

Nothing in the server reaches for a global database, clock or random
source; tests build a ``ServerContext`` with a fake clock or an in-memory
store and the production path stays the tested path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.db import make_engine, make_sessionmaker


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ServerSettings:
    database_url: str = "sqlite:///fedsignal-server.db"
    # Directory with the CA, the server's TLS key pair and bundle keys.
    state_dir: Path = Path("fedsignal-server")
    listen: str = "127.0.0.1:7443"
    insecure_dev: bool = False
    # Minimum distinct tenants before a merged cell is shown (k).
    min_tenants: int = 5
    # Largest accepted request, bytes.
    max_message_bytes: int = 4 * 1024 * 1024
    # Lifetime of signed bundle metadata.
    bundle_expiry_days: int = 7
    enrollment_token_ttl_seconds: int = 24 * 3600
    confidence: float = 0.95


@dataclass
class ServerContext:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Callable[[], datetime] = field(default=utc_now)

    @classmethod
    def create(cls, settings: ServerSettings, clock: Callable[[], datetime] = utc_now) -> ServerContext:
        engine = make_engine(settings.database_url)
        return cls(settings=settings, engine=engine, sessions=make_sessionmaker(engine), clock=clock)
