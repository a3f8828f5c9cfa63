"""Policy pack: rules over plan resources, an offline runner, and a pulumi-policy entry point."""

# The deploy-readiness family registers itself with the rules on import: every runner (offline,
# pulumi-policy) that loads the rules loads it too.
from infra.policy import readiness as readiness
