"""Tests of the live path (Automation API against the stand-in CLI) and drift analysis."""
