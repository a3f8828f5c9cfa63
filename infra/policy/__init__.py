"""Policy pack: rules over plan resources, an offline runner, and a pulumi-policy entry point."""
