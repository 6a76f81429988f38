"""Shared fixtures. The suite runs under ``python -m gevent.monkey --module pytest`` (see the
Makefile), so the process is patched before pytest imports anything: servers under test run
in greenlets of this process, and blocking clients (``websockets.sync``) cooperate with them."""
