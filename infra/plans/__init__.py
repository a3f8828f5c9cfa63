"""Plans, by role: ``produce`` renders them (offline or live), ``read`` is the plan JSON and
Pulumi's formats, ``judge`` holds the guard, drift, outcomes and the report."""
