"""flask_mlsockets: the Flask extension of mlsockets (imports no gevent)."""

from mlsockets._version import __version__

__all__ = ["__version__"]
