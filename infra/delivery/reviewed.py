"""The reviewed plan is the applied plan: on a push to an environment branch, decide per stack
whether to skip it, apply the plan its pull request saved, or plan again.

- skip: nothing that reaches the stack changed since the environment's deployed commit (so no
  ``up`` runs and production asks for no approval);
- apply: the push is the merge of a pull request whose live preview saved this stack's plan,
  the merged tree equals the reviewed head for everything that reaches the stack, and the
  environment's deployment has not moved since the plan was made (the state it planned against);
- plan: anything else; the new plan is posted on the pull request and, in production, waits for
  the environment's reviewers again (each ``up`` job asks for approval).

The pull request's live preview comment carries one hidden record per saved plan
(``<!-- billing-plan {...} -->``): the stack, the reviewed head, the deployment it planned
against and the run holding the plan artifact.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from github import GithubException
from github.Repository import Repository

from infra.delivery.affected import affected_stacks
from infra.delivery.github import GitHubError, message
from infra.git import changed_files

_RECORD = re.compile(r"<!-- billing-plan (\{[^<>]*\}) -->")


@dataclass(frozen=True)
class PlanRecord:
    """A plan saved by a pull request's live preview."""

    stack: str
    head: str  # the reviewed commit
    deployed: str  # the environment's deployed commit when the plan was made ("" if none)
    run_id: str  # the workflow run whose artifact plan-<stack> holds the plan

    def line(self) -> str:
        return f"<!-- billing-plan {json.dumps(asdict(self), sort_keys=True)} -->"


def parse_records(text: str) -> dict[str, PlanRecord]:
    records: dict[str, PlanRecord] = {}
    for found in _RECORD.finditer(text):
        try:
            data = json.loads(found.group(1))
            record = PlanRecord(
                **{k: str(data[k]) for k in ("stack", "head", "deployed", "run_id")}
            )
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # someone else's text that looks alike: not a record
        records[record.stack] = record
    return records


@dataclass(frozen=True)
class Decision:
    environment: str
    cloud: str
    action: str  # "skip", "apply" or "plan"
    reason: str
    pr: int | None = None
    run_id: str = ""

    @property
    def stack(self) -> str:
        return f"{self.environment}-{self.cloud}"

    def matrix_entry(self) -> dict[str, str]:
        return {
            "environment": self.environment,
            "cloud": self.cloud,
            "stack": self.stack,
            "action": self.action,
            "run_id": self.run_id,
            "pr": str(self.pr or ""),
        }


def changed_stacks(checkout: Path, base: str, head: str) -> set[str]:
    """Stacks that the two trees ``base`` and ``head`` differ in (a plain two-tree diff)."""
    files = changed_files(checkout, base, head)
    return {s.key for s in affected_stacks(files, checkout / "environments", checkout / "services")}


def decide(
    checkout: Path,
    environment: str,
    cloud: str,
    *,
    after: str,
    deployed: str | None,
    pr: int | None,
    record: PlanRecord | None,
) -> Decision:
    """What deploy does with one stack for the pushed commit ``after``."""
    stack = f"{environment}-{cloud}"

    def plan(reason: str) -> Decision:
        return Decision(environment, cloud, "plan", reason, pr)

    if deployed and stack not in changed_stacks(checkout, deployed, after):
        return Decision(
            environment,
            cloud,
            "skip",
            f"nothing reaching {stack} changed since the deployed {deployed[:12]}",
            pr,
        )
    if pr is None:
        return plan(f"{after[:12]} is not the merge of a pull request")
    if record is None:
        return plan(f"pull request #{pr} saved no plan for {stack}")
    if stack in changed_stacks(checkout, record.head, after):
        return plan(
            f"the merge differs from the reviewed {record.head[:12]} for {stack} (the base moved)"
        )
    if record.deployed != (deployed or ""):
        return plan(
            f"the state moved: {environment} was deployed at "
            f"{(deployed or 'nothing')[:12]} since the plan (made against "
            f"{(record.deployed or 'nothing')[:12]})"
        )
    return Decision(
        environment,
        cloud,
        "apply",
        f"the plan reviewed on #{pr} at {record.head[:12]}",
        pr,
        record.run_id,
    )


def merged_pull(repo: Repository, sha: str, base: str) -> tuple[int, dict[str, PlanRecord]] | None:
    """The pull request into ``base`` merged as ``sha``, with the plans its comments recorded."""
    try:
        for pull in repo.get_commit(sha).get_pulls():
            if pull.base.ref != base or pull.merge_commit_sha != sha:
                continue
            records: dict[str, PlanRecord] = {}
            for comment in pull.get_issue_comments():
                records.update(parse_records(comment.body or ""))
            return pull.number, records
    except GithubException as exc:
        raise GitHubError(f"pull requests of {sha[:12]}: {message(exc)}") from None
    return None
