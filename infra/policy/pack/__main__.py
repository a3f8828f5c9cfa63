"""Entry point for `pulumi preview --policy-pack infra/policy/pack`: serves the rules."""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi starts the pack with this directory as the working directory; the rules live in the
# repository's `infra` package three levels up.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy.pulumi_pack import PACK_NAME, policies

PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
