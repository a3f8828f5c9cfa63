"""Reading plans: the plan JSON (model), Pulumi's formats and `pulumi preview --json` (formats),
the stateful types (stateful) and what changes between two sets of plans (diff)."""
