"""A small chat app on mlsockets: Flask + Flask-Login, rooms, presence, typing indicators,
private notifications from a view and marshmallow-validated messages.

Run it with ``make demo``, or::

    MLSOCKETS_BIND=127.0.0.1:8000 mlsockets serve "examples.chat:create_app()"

then open http://127.0.0.1:8000/ and log in as alice, bob or carol (in two browsers, or one
normal and one private window, to chat with yourself). One process, no Redis.

Modules: ``app`` (the factory), ``users`` (the demo users), ``rooms`` (rooms, topics and
recent messages, in memory), ``schemas`` (what clients may send), ``sockets`` (event handlers
and channel authorizers), ``views`` (login, the page, ``POST /notify``, topics);
``templates/`` and ``static/`` hold the page: plain HTML, CSS and JavaScript, no build step.
"""

from .app import create_app

__all__ = ["create_app"]
