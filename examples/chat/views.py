"""The HTTP side: login and logout, the chat page, and two views that broadcast.

- ``POST /notify`` sends a private notification with ``broadcaster.emit(..., to=User(id))``;
- ``POST /rooms/<room>/topic`` changes a room's topic. The page calls it with
  ``sock.fetch``, which adds the ``X-Socket-ID`` header: ``skip_sender=True`` then leaves the
  page's own connection out, and the page updates itself from the response.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required, login_user, logout_user
from marshmallow import ValidationError

from flask_mlsockets import User, broadcaster

from .rooms import ROOMS, room_channel, rooms
from .schemas import NotifySchema, TopicSchema
from .users import DEMO_PASSWORD, USERS, check_login

bp = Blueprint("chat", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    error = None
    if request.method == "POST":
        user = check_login(request.form.get("username", ""), request.form.get("password", ""))
        if user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        error = "Unknown user or wrong password."
    users = sorted(USERS.values(), key=lambda u: u.name)
    return render_template("login.html", users=users, password=DEMO_PASSWORD, error=error)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    logout_user()
    return redirect(url_for("chat.login"))


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    chat = {
        "me": {"id": current_user.id, "name": current_user.name},
        "rooms": list(ROOMS),
        "users": [{"id": u.id, "name": u.name} for u in USERS.values()],
    }
    return render_template("chat.html", chat=chat)


@bp.post("/notify")
@login_required
def notify() -> ResponseReturnValue:
    """Form fields ``to`` (a user id) and ``text``: a notification to every page of that user."""
    try:
        data = NotifySchema().load(request.form.to_dict())
    except ValidationError as exc:
        return {"errors": exc.messages}, 400
    notice = {"from": current_user.id, "name": current_user.name, "text": data["text"]}
    delivered = broadcaster.emit("notify", notice, to=User(data["to"]))
    return {"delivered": delivered}  # how many of the user's connections got it


@bp.post("/rooms/<room>/topic")
@login_required
def set_topic(room: str) -> ResponseReturnValue:
    """JSON ``{"topic": ...}``: to the room's other pages; the caller gets the same back."""
    if room not in ROOMS:
        abort(404)
    try:
        data = TopicSchema().load(request.get_json(silent=True) or {})
    except ValidationError as exc:
        return {"errors": exc.messages}, 400
    rooms()[room].topic = data["topic"]
    change: dict[str, Any] = {"room": room, "topic": data["topic"], "name": current_user.name}
    broadcaster.emit("room.topic", change, to=room_channel(room), skip_sender=True)
    return change


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if target and target.startswith("/") and not urlsplit(target).netloc:
        return target
    return url_for("chat.index")
