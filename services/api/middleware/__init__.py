"""ASGI middleware, outermost first: request context, authentication, rate limit, idempotency."""
