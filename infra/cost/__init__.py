"""Monthly on-demand cost estimate of a stack, read from its plan file."""
