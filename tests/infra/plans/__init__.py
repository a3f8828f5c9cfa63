"""Tests of infra.plans, one folder per role: produce, read, judge (shared fixtures here)."""
