"""Bootstrap: what must exist before CI can deploy (state, secrets keys, OIDC trust, roles)."""
