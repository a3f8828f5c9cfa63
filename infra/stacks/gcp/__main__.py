"""Entry point the Pulumi CLI runs for the billing-gcp project."""

from infra.gcp.program import main

main()
