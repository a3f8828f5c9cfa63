"""Pulumi's formats: URNs, wire markers and redaction, and the one reader of previews."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.plans.judge import drift, guard
from infra.plans.read.formats import (
    OUTPUT_SIG,
    RESOURCE_SIG,
    UNKNOWN_VALUE,
    Urn,
    read_preview,
    redact,
    secret,
    short,
)
from infra.plans.read.model import SECRET, UNKNOWN

DATA = Path(__file__).parents[1] / "data"
DATABASE = (
    "urn:pulumi:production::billing-aws::billing:aws:Database"
    "$aws:rds/instance:Instance::database-instance"
)


def test_urn_parts_and_short_form() -> None:
    urn = Urn.parse(DATABASE)
    assert (urn.stack, urn.project, urn.name) == ("production", "billing-aws", "database-instance")
    assert urn.qualified_type == "billing:aws:Database$aws:rds/instance:Instance"
    assert urn.type == "aws:rds/instance:Instance"
    assert urn.short == "aws:rds/instance:Instance database-instance"
    assert str(urn) == DATABASE
    assert short("not a urn") == "not a urn"
    with pytest.raises(ValueError, match="not a Pulumi URN"):
        Urn.parse("urn:pulumi:dev::only-two")


def test_child_urns_carry_the_parents_types_except_the_stacks() -> None:
    stack = "urn:pulumi:dev::billing-aws::pulumi:pulumi:Stack::billing-aws-dev"
    component = Urn.of_child("dev", "billing-aws", stack, "billing:aws:Database", "database")
    assert component.qualified_type == "billing:aws:Database"
    child = Urn.of_child("dev", "billing-aws", str(component), "aws:rds/instance:Instance", "db")
    assert child.qualified_type == "billing:aws:Database$aws:rds/instance:Instance"
    root = Urn.of_child("dev", "billing-aws", "", "pulumi:pulumi:Stack", "billing-aws-dev")
    assert str(root) == stack


def test_redaction_of_every_wire_marker() -> None:
    value = {
        "password": secret("hunter2"),
        "nested": [{"token": secret({"deep": "x"})}, 3.0, 2.5],
        "id": UNKNOWN_VALUE,
        "ref": {"4dabf18193072939515e22adb298388d": RESOURCE_SIG, "urn": DATABASE},
        "out": {"4dabf18193072939515e22adb298388d": OUTPUT_SIG, "value": 7.0},
        "secretOut": {"4dabf18193072939515e22adb298388d": OUTPUT_SIG, "secret": True, "value": 1},
        "pending": {"4dabf18193072939515e22adb298388d": OUTPUT_SIG},
    }
    assert redact(value) == {
        "password": SECRET,
        "nested": [{"token": SECRET}, 3, 2.5],
        "id": UNKNOWN,
        "ref": DATABASE,
        "out": 7,
        "secretOut": SECRET,
        "pending": UNKNOWN,
    }


def test_guard_and_drift_list_the_same_changed_keys_for_a_step() -> None:
    # The security group's step has diffReasons and a detailedDiff with a nested path: both
    # readers see the union, so the guard and the drift report cannot disagree.
    steps = {s.urn: s for s in read_preview(DATA / "drift_production_aws.json").steps}
    report = drift.DriftReport("production-aws", list(steps.values()))
    changes = guard.load_preview(DATA / "drift_production_aws.json").changes
    assert changes, "the fixture has changes"
    assert {c.urn: c.keys for c in changes} == {s.urn: s.keys for s in report.drifted}
    group = next(c for c in changes if c.urn.endswith("network-app-sg"))
    assert group.keys == ["ingress", "ingress[0].cidrBlocks[0]", "tags.owner"]
