"""Monthly cost estimates of the rendered stacks, line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.cli import main
from infra.cost.estimate import by_environment, estimate, verdict
from infra.cost.prices import PRICES_FILE, PricesError, load_prices, prices
from infra.plans.produce.offline import render
from infra.plans.read.model import Plan, plan_from_dict
from infra.settings import Cloud, environment

ENVIRONMENTS = ("dev", "staging", "production")


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    rendered = [render(environment(e), c) for e in ENVIRONMENTS for c in (Cloud.AWS, Cloud.GCP)]
    return {p.key: p for p in rendered}


def test_dev_costs_less_than_staging_less_than_production(plans: dict[str, Plan]) -> None:
    totals = by_environment([estimate(p) for p in plans.values()])
    assert totals["dev"] < totals["staging"] < totals["production"]
    for plan in plans.values():
        assert estimate(plan).total > 0, plan.key


def test_multi_az_database_is_doubled(plans: dict[str, Plan]) -> None:
    table = prices().regions["us-east-1"]
    hours = prices().hours_per_month
    production = environment("production").database
    [line] = [
        x
        for x in estimate(plans["production-aws"]).lines
        if x.type == "aws:rds/instance:Instance" and x.name == "database-instance"
    ]
    single = table.rds_instance_hour[production.instance_class] * hours + (
        production.allocated_storage_gb * table.unit["rds_storage_gb_month"]
    )
    assert production.multi_az
    assert line.monthly == pytest.approx(2 * single)
    assert "Multi-AZ" in line.description


def test_fargate_is_priced_at_the_minimum_task_count(plans: dict[str, Plan]) -> None:
    lines = [
        x for x in estimate(plans["production-aws"]).lines if x.type == "aws:ecs/service:Service"
    ]
    api = environment("production").services["api"]
    [api_line] = [x for x in lines if "api" in x.name]
    assert f"Fargate {api.min_tasks} tasks" in api_line.description
    table = prices().regions["us-east-1"].unit
    assert api.cpu is not None
    assert api.memory is not None
    expected = (
        api.min_tasks
        * (
            api.cpu / 1024 * table["fargate_vcpu_hour"]
            + api.memory / 1024 * table["fargate_gb_hour"]
        )
        * 730
    )
    assert api_line.monthly == pytest.approx(expected)


def _edited(plan: Plan, **changes: Any) -> Plan:
    data = json.loads(plan.to_json())
    for resource in data["resources"]:
        if resource["type"].startswith("pulumi:providers:"):
            resource["inputs"].update(changes)
    return plan_from_dict(data, "edited")


def test_unknown_region_is_not_priced_never_zero(plans: dict[str, Plan]) -> None:
    known = estimate(plans["dev-aws"])
    elsewhere = estimate(_edited(plans["dev-aws"], region="eu-west-1"))
    assert elsewhere.total == 0
    assert len(elsewhere.unpriced) == len(elsewhere.lines) == len(known.lines)
    assert all("region eu-west-1 not in the price file" in x.description for x in elsewhere.lines)


def test_unknown_type_is_listed_as_not_priced(plans: dict[str, Plan]) -> None:
    data = json.loads(plans["dev-aws"].to_json())
    data["resources"].append(
        {
            "urn": "urn:pulumi:dev::billing-aws::aws:opensearch/domain:Domain::search",
            "type": "aws:opensearch/domain:Domain",
            "name": "search",
            "parent": "",
            "protect": False,
            "inputs": {},
            "dependencies": [],
        }
    )
    result = estimate(plan_from_dict(data, "edited"))
    [line] = [x for x in result.unpriced if x.name == "search"]
    assert line.description == "resource type not in the price file"
    assert "not priced" in verdict([result]).markdown


def test_cost_command_prints_line_items_and_totals(
    plans: dict[str, Plan], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(plans[f"{e}-aws"].write(tmp_path)) for e in ENVIRONMENTS]
    assert main(["cost", *files, "--json", str(tmp_path / "cost.json")]) == 0
    out = capsys.readouterr().out
    assert "production-aws (us-east-1):" in out
    assert "NAT gateway" in out
    assert "total per month" in out
    for env in ENVIRONMENTS:
        assert f"{env}: $" in out
    written = json.loads((tmp_path / "cost.json").read_text(encoding="utf-8"))
    assert [e["stack"] for e in written] == ["dev-aws", "staging-aws", "production-aws"]


def test_price_file_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    text = PRICES_FILE.read_text(encoding="utf-8")
    path.write_text(
        text.replace("nat_gateway_hour = 0.045", 'nat_gateway_hour = "cheap"'), encoding="utf-8"
    )
    with pytest.raises(PricesError, match=r"key 'regions.us-east-1.unit.nat_gateway_hour'"):
        load_prices(path)


def test_price_file_records_sources_and_date() -> None:
    table = prices()
    assert set(table.regions) == {"us-east-1", "us-central1"}
    for region in table.regions.values():
        assert all(s.startswith("https://") for s in region.sources)
    assert table.as_of.year >= 2025
