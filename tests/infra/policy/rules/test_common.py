"""The catalogue as a whole, and the rule over both clouds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.policy.readiness import READINESS, readiness_names
from infra.policy.rules import RULES, Context, ResourceView, Rule, rules_by_name
from infra.policy.rules.aws import AWS
from infra.policy.rules.common import BOTH, Catalogue
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


def _no_findings(_: ResourceView, __: Context) -> Iterator[str]:
    yield from ()


def test_a_catalogue_refuses_a_resource_type_of_another_cloud() -> None:
    catalogue = Catalogue("gcp")
    declare = catalogue.resource_rule(name="x", types=(SQL, RDS), controls=("C",), description="d")
    with pytest.raises(ValueError, match=r"rule x: aws:rds/instance:Instance is not \('gcp',\)"):
        declare(_no_findings)
    assert catalogue.rules == []


def test_a_rule_has_exactly_one_check_and_a_resource_rule_names_its_types() -> None:
    with pytest.raises(ValueError, match="either resource_check or stack_check"):
        Rule(name="x", description="d", controls=("C",), clouds=("aws",))
    with pytest.raises(ValueError, match="names the types it judges"):
        Rule(
            name="x", description="d", controls=("C",), clouds=("aws",), resource_check=_no_findings
        )
    rule = Rule(
        name="x",
        description="d",
        controls=("C",),
        clouds=("aws",),
        types=(RDS,),
        resource_check=_no_findings,
    )
    assert rule.evaluate([res(RDS)], Context("dev")) == []
