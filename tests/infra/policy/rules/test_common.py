"""The catalogue as a whole, and the rule over both clouds."""

from __future__ import annotations

from infra.policy.readiness import READINESS, readiness_names
from infra.policy.rules import RULES, Context, rules_by_name
from infra.policy.rules.aws import AWS
from infra.policy.rules.common import BOTH
from infra.policy.rules.gcp import GCP
from tests.infra.policy.rules.cases import Case, check_case, in_dev, res

RDS = "aws:rds/instance:Instance"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"

PROTECT = Case([res(RDS, protect=True), res("aws:ec2/vpc:Vpc")], [res(RDS), res(SQL)])


def test_the_catalogue_is_each_cloud_in_turn_then_deploy_readiness() -> None:
    assert [*AWS.rules, *GCP.rules, *BOTH.rules, *READINESS] == RULES
    assert len(RULES) - len(READINESS) >= 30
    assert len(rules_by_name()) == len(RULES), "rule names are unique"
    assert not readiness_names() & {r.name for r in [*AWS.rules, *GCP.rules, *BOTH.rules]}
    for rule in RULES:
        assert rule.controls, rule.name


def test_protect_stateful_in_production() -> None:
    rule = rules_by_name()["protect-stateful-in-production"]
    assert rule.clouds == ("aws", "gcp")
    check_case(rule, PROTECT)
    assert rule.evaluate(in_dev(PROTECT.failing), Context("dev")) == []
