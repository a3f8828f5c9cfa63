"""Producing plans: a stack rendered offline under the SDK's mock runtime (offline, mocks*), another
git ref rendered by its own code (checkout), or the live path through the Pulumi CLI (live)."""
