"""``python -m mlsockets``: the same as the ``mlsockets`` command."""

from mlsockets.cli import main

raise SystemExit(main())
