"""The socket directory of one host's serving processes: file names, permission checks,
liveness and the removal of what dead processes left behind.

The directory (``MLSOCKETS_BROADCAST_DIR``, by default ``<instance_path>/mlsockets``) holds,
for every serving process ("node") of one ``prefix``::

    <prefix>.<node>.lock     flock()ed by the node for its whole life: the kernel releases it
                             when the process dies, even by SIGKILL, so "can I lock it?" is
                             an exact liveness test, with no clock and no pid reuse problem
    <prefix>.<node>.sock     its Unix stream socket (mlsockets.broadcast.unix)
    <prefix>.registry.sqlite3   the shared registry and presence (WAL mode; with -wal,
                             -shm and an .init-lock taken while a process opens it;
                             mlsockets.registry.unix)

The directory must belong to this user with mode 0700: a relay message is trusted input, so
nobody else may connect or plant a socket.

Call protocol: serving processes create a :class:`HostDirectory` (it creates the directory),
:meth:`HostDirectory.claim` their node's lock for their whole life and
:meth:`HostDirectory.release` it at a clean exit; anyone may call :meth:`~HostDirectory.alive`,
:meth:`~HostDirectory.reap` and :meth:`~HostDirectory.reap_all`. Publishers pass
``create=False``. :func:`is_refused` tells a dead peer's connection error from others.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import time
from pathlib import Path

from mlsockets.exceptions import ConfigurationError
from mlsockets.typing import NodeId

__all__ = [
    "MAX_SOCKET_PATH",
    "HostDirectory",
    "is_refused",
]

logger = logging.getLogger("mlsockets.registry")

_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
# sockaddr_un.sun_path is 108 bytes on Linux, NUL included (unix(7)).
MAX_SOCKET_PATH = 107


def is_refused(exc: OSError) -> bool:
    """True for the errors connecting to the socket of a process that is gone."""
    return exc.errno in (errno.ECONNREFUSED, errno.ENOENT)


class HostDirectory:
    """The socket directory of one host's serving processes (see the module docstring).

    Args:
        path: the directory.
        prefix: processes with the same directory and prefix are one cluster.
        create: create the directory (mode 0700) when it is missing (serving processes);
            publishers pass False and get :class:`FileNotFoundError` instead.

    Raises:
        ConfigurationError: an invalid prefix; the path is not a directory, belongs to
            another user, or is open to group or others (see :meth:`check`).
        FileNotFoundError: ``create`` is False and the directory does not exist.
    """

    def __init__(self, path: str | os.PathLike[str], prefix: str = "mls", *, create: bool = True):
        if not _PREFIX.match(prefix):
            raise ConfigurationError(
                f"invalid prefix {prefix!r} for a socket directory (1-32 of A-Z a-z 0-9 _ -)"
            )
        self.path = Path(path).absolute()
        self.prefix = prefix
        if create and not self.path.exists():
            # The mode is applied before anything can be put inside (umask only removes bits).
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.check()
        self._held: dict[NodeId, int] = {}  # node -> fd of its lock (this process's nodes)

    def check(self) -> None:
        """Refuse a directory that another local user could write to or read from.

        Raises:
            ConfigurationError: not a directory, not owned by this process's user, or any
                group/other permission bit set.
            FileNotFoundError: it does not exist.
        """
        st = os.stat(self.path)
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigurationError(f"the socket directory {self.path} is not a directory")
        if st.st_uid != os.geteuid():
            raise ConfigurationError(
                f"the socket directory {self.path} belongs to uid {st.st_uid}, not to this "
                f"process's user (uid {os.geteuid()}): another user could impersonate the "
                "servers; use a directory of your own"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"the socket directory {self.path} has mode {mode:04o}: other users could "
                f"connect to the servers or plant sockets; run chmod 700 {self.path}"
            )

    # -- names -----------------------------------------------------------------------------

    def socket_path(self, node: str) -> str:
        return str(self.path / f"{self.prefix}.{node}.sock")

    def lock_path(self, node: str) -> str:
        return str(self.path / f"{self.prefix}.{node}.lock")

    def temporary_path(self, node: str, kind: str) -> str:
        """Where a socket (``kind`` "s") or lock (``kind`` "l") file is made before it is
        renamed into place; as long as the socket path (AF_UNIX binds it)."""
        return str(self.path / f".{self.prefix}.{node}.{kind}tmp")

    @property
    def database(self) -> str:
        return str(self.path / f"{self.prefix}.registry.sqlite3")

    def check_socket_path(self, node: str) -> None:
        """Raises ConfigurationError when the node's socket path is too long for AF_UNIX."""
        path = self.socket_path(node)
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ConfigurationError(
                f"the socket path {path} is {len(os.fsencode(path))} bytes; AF_UNIX allows "
                f"{MAX_SOCKET_PATH}: set a shorter MLSOCKETS_BROADCAST_DIR"
            )

    def _nodes_with(self, suffix: str) -> list[NodeId]:
        start = f"{self.prefix}."
        nodes = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(start) and name.endswith(suffix):
                    node = name[len(start) : -len(suffix)]
                    if _NODE.match(node):
                        nodes.append(NodeId(node))
        return sorted(nodes)

    def sockets(self) -> list[tuple[NodeId, str]]:
        """Every node with a socket in the directory, alive or not, and the socket's path."""
        return [(node, self.socket_path(node)) for node in self._nodes_with(".sock")]

    # -- liveness --------------------------------------------------------------------------

    def claim(self, node: NodeId) -> None:
        """Hold ``node``'s lock file for the life of this process (idempotent).

        The file is locked under a temporary name and then renamed into place, so nobody
        ever sees an unlocked lock file of a live node.
        """
        if node in self._held:
            return
        if not _NODE.match(node):
            raise ConfigurationError(f"invalid node id {node!r} (A-Z a-z 0-9 _ -)")
        self.check_socket_path(node)
        final = self.lock_path(node)
        temporary = self.temporary_path(node, "l")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.rename(temporary, final)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._held[node] = fd

    def release(self, node: NodeId) -> None:
        """Remove ``node``'s lock file and release it (a clean exit)."""
        fd = self._held.pop(node, None)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path(node))
        os.close(fd)

    def alive(self, node: str) -> bool:
        """True while the process of ``node`` holds its lock (it cannot be taken)."""
        if node in self._held:
            return True
        try:
            fd = os.open(self.lock_path(node), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:  # unreadable: not ours to judge; treat as alive
            logger.warning("cannot check the liveness of node %s: %s", node, exc)
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the lock if we got it
        return False

    def reap(self, node: str) -> bool:
        """Remove the socket and lock file of ``node`` if its process is dead.

        Returns True when it is dead (whoever removed the files). Safe to race with other
        processes doing the same.
        """
        if self.alive(node):
            return False
        for path in (self.socket_path(node), self.lock_path(node)):
            try:
                os.unlink(path)
                logger.info("removed %s (its process is gone)", path)
            except FileNotFoundError:
                pass
        return True

    def reap_all(self) -> int:
        """Remove what every dead node left in the directory (a crash, a SIGKILL);
        returns how many nodes were dead."""
        nodes = set(self._nodes_with(".sock")) | set(self._nodes_with(".lock"))
        dead = sum(self.reap(node) for node in sorted(nodes))
        # Temporary files live for microseconds while a process binds or claims; one that
        # is a minute old belongs to a process that died right then.
        old = time.time() - 60
        with os.scandir(self.path) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(f".{self.prefix}.") and name.endswith(("stmp", "ltmp")):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat(follow_symlinks=False).st_mtime < old:
                            os.unlink(entry.path)
                            logger.info("removed %s (left by a process that died)", entry.path)
        return dead

    def __repr__(self) -> str:
        return f"<HostDirectory {self.path} prefix={self.prefix!r}>"
