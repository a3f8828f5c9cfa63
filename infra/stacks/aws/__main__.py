"""Entry point the Pulumi CLI runs for the billing-aws project."""

from infra.aws.program import main

main()
