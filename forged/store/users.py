"""Users and their API tokens (shared-box mode). Tokens are random, so a plain SHA-256 is a safe hash."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from forged.store.db import Database
from forged.store.models import User

_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, admin: bool = False) -> str:
        """Create or re-key a user; returns the new token (only ever shown once)."""
        if not _NAME.match(name):
            raise ValueError(f"invalid user name {name!r}: use lowercase letters, digits, '_', '.', '-'")
        token = "forge_" + secrets.token_urlsafe(32)
        with self.db.write() as s:
            user = s.get(User, name)
            if user is None:
                s.add(
                    User(name=name, admin=admin, token_hash=hash_token(token), created_at=datetime.now(UTC))
                )
            else:
                user.token_hash = hash_token(token)
                user.admin = admin
        return token

    def authenticate(self, token: str) -> Principal | None:
        with self.db.read() as s:
            user = s.scalar(select(User).where(User.token_hash == hash_token(token)))
            return Principal(user.name, user.admin) if user else None
