"""The catalogue as a whole, and the rule over both clouds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.policy.readiness import READINESS, readiness_names
from infra.policy.rules import RULES, Context, ResourceView, Rule, rules_by_name
from infra.policy.rules.aws import AWS
from infra.policy.rules.common import ANY_VALUE, BOTH, Catalogue, ValueCheck, primary
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


def _findings(check: ValueCheck, env: str = "production", **inputs: Any) -> list[str]:
    return list(check(res(RDS, "db", env, **inputs), Context(env)))


def test_a_value_check_expects_true_unless_told_and_takes_an_unknown_value_as_true() -> None:
    check = ValueCheck(key="settings.flag")
    assert _findings(check, settings={"flag": True}) == []
    assert _findings(check, settings=[{"flag": True}]) == []  # a nested block is looked through
    assert _findings(check, settings={"flag": "[unknown]"}) == []
    assert _findings(check, settings={"flag": False}) == ["settings.flag is not true"]
    assert _findings(check) == ["settings.flag is not true"]
    # 1 == True in Python, but a number is no flag turned on.
    assert _findings(check, settings={"flag": 1}) == ["settings.flag is not true"]


def test_a_value_check_names_the_value_it_found_when_it_expects_words() -> None:
    check = ValueCheck(key="mode", expected=("A", "B"))
    assert _findings(check, mode="B") == []
    assert _findings(check, mode="C") == ["mode is C"]
    assert _findings(check) == ["mode is unset"]
    assert _findings(check, mode="[unknown]") == ["mode is [unknown]"]
    assert _findings(ValueCheck(key="public", expected=(False,)), public=True) == [
        "public is not false"
    ]


def test_a_forbidden_value_fails_and_the_provider_default_stands_in_for_an_unset_key() -> None:
    check = ValueCheck(key="ingress", forbidden=("ALL",), default="ALL")
    assert _findings(check, ingress="INTERNAL") == []
    assert _findings(check, ingress="ALL") == ["ingress is ALL"]
    assert _findings(check) == ["ingress is ALL"]
    public = ValueCheck(key="public", forbidden=(True,))
    assert _findings(public) == []
    assert _findings(public, public="[unknown]") == []
    assert _findings(public, public=True) == ["public is true"]


def test_any_value_passes_a_set_key_and_says_what_an_unset_one_means() -> None:
    check = ValueCheck(key="kmsKeyId", expected=(ANY_VALUE,), why="the default key")
    assert _findings(check, kmsKeyId="arn:key") == []
    assert _findings(check, kmsKeyId="") == ["no kmsKeyId: the default key"]
    assert _findings(ValueCheck(key="kmsKeyId", expected=(ANY_VALUE,))) == ["no kmsKeyId"]


def test_a_value_check_judges_only_what_it_applies_to() -> None:
    check = ValueCheck(key="multiAz", production_only=True, applies=primary)
    assert _findings(check) == ["multiAz is not true in production"]
    assert _findings(check, "dev") == []
    assert _findings(check, replicateSourceDb="db-source") == []
