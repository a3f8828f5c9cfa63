"""Plans: render stacks (offline under the SDK's mock runtime, or live), report, diff, check."""
