"""Tests of infra.plans: offline renders, the live path against the stand-in CLI, drift, guard."""
