"""Tests of infra.plans.read: Pulumi's formats and the preview reader."""
