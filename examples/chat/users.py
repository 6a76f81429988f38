"""The demo users: a plain in-memory store with hashed passwords (werkzeug.security).

A real app keeps its users in a database; everything else in the example would stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

#: Every demo user has this password; the login page shows it.
DEMO_PASSWORD = "wonderland"


@dataclass(eq=False)
class ChatUser(UserMixin):
    """A Flask-Login user. ``id`` is also the WebSocket principal's ``user_id``."""

    id: str
    name: str
    password_hash: str = field(repr=False)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


def _demo_users() -> dict[str, ChatUser]:
    hashed = generate_password_hash(DEMO_PASSWORD)  # once: scrypt is slow on purpose
    return {
        user_id: ChatUser(user_id, name, hashed)
        for user_id, name in [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")]
    }


USERS: dict[str, ChatUser] = _demo_users()


def get_user(user_id: str) -> ChatUser | None:
    """Flask-Login's ``user_loader``: the user with this id, or None."""
    return USERS.get(user_id)


def check_login(username: str, password: str) -> ChatUser | None:
    """The user when the password is right, else None."""
    user = USERS.get(username.strip().lower())
    if user is None or not user.check_password(password):
        return None
    return user
