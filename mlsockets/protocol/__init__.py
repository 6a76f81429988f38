"""RFC 6455 + RFC 7692, sans-I/O: bytes in, events and bytes out. Standard library only."""
