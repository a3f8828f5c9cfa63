"""Tests of infra.plans.produce: offline renders, other refs, the live path (stand-in CLI)."""
