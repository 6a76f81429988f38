"""Connection registries: in-process (local) and cluster-wide (redis). See docs/design-app.md."""

from mlsockets.registry.base import ConnectionRegistry, HasIdentity
from mlsockets.registry.local import LocalRegistry

__all__ = ["ConnectionRegistry", "HasIdentity", "LocalRegistry"]
