"""ASGI middleware: request ids, the access log and HTTP metrics."""
