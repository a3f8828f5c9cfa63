"""Tests of infra.plans.judge: the guard, allow-replace.toml and the drift report."""
