"""Engine creation and schema migration for SQLite (default) and PostgreSQL (shared box)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class Database:
    """One engine plus the session discipline forged needs from it.

    SQLite allows one writer at a time; forged serialises its own writes behind a lock so threads queue in
    Python instead of spinning on SQLITE_BUSY, while WAL keeps readers (watchers) from ever blocking.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine: Engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else self.engine.dialect.name

    def migrate(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextlib.contextmanager
    def write(self, after_commit: Callable[[Session], None] | None = None) -> Iterator[Session]:
        """A write transaction; `after_commit` runs once it has committed, still holding the write lock,
        so what it publishes comes out in commit order."""
        with self._write_lock, self._sessions() as session:
            with session.begin():
                yield session
            if after_commit is not None:
                after_commit(session)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core connection for reads on hot paths: a fraction of an ORM session's cost per query."""
        with self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write_core(self, after_commit: Callable[[], None] | None = None) -> Iterator[Connection]:
        """A Core write transaction, under the same write lock and after-commit rule as write()."""
        with self._write_lock:
            with self.engine.begin() as conn:
                yield conn
            if after_commit is not None:
                after_commit()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the last commits.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine
