"""The pulumi-policy pack directory (PulumiPolicy.yaml and its entry point)."""
