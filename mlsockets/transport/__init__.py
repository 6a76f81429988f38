"""Adapters that run the sans-I/O protocol over real sockets."""
