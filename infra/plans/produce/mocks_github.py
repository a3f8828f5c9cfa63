"""Offline answers for the GitHub provider's invokes (the bootstrap programs look up teams)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.plans.produce.mocks import INVOKES, Target, digest


def _team(args: Mapping[str, Any], _target: Target) -> dict[str, Any]:
    slug = str(args.get("slug", ""))
    # A stable numeric id per slug, as GitHub gives every team one.
    team_id = int(digest(slug, 8), 16) % 10_000_000
    return {
        "id": str(team_id),
        "slug": slug,
        "name": slug,
        "nodeId": f"T_{team_id}",
        "members": [],
        "repositories": [],
    }


INVOKES["github:index/getTeam:getTeam"] = _team
