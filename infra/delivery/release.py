"""Releases: which commit each environment runs, and the pull requests that move or restore it.

A release is the commit deployed to an environment. GitHub records it: every deploy job runs in
the GitHub environment named after the branch, and a job that references an environment creates
a deployment for its commit with a status per outcome
(https://docs.github.com/actions/deployment/targeting-different-environments/using-environments-for-deployment,
https://docs.github.com/rest/deployments/deployments#list-deployments). So:

- promotion takes the source's newest successful deployment, not the branch tip when it runs;
- rollback restores the pins of the environment's previous successful deployment;
- both push a branch and open (or update) a pull request with a GitHub App token, because a pull
  request opened with the workflow's GITHUB_TOKEN starts no workflow: no CI, no preview, no
  required checks ("events triggered by the GITHUB_TOKEN ... will not create a new workflow run",
  https://docs.github.com/actions/using-workflows/triggering-a-workflow).
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from github import GithubException
from github.Repository import Repository

from infra.delivery.github import GitHubError, check_length, connection, message, repository
from infra.delivery.promote import (
    PinChange,
    PromotionError,
    _parse_pins,
    _preview,
    _resolve,
    pin_changes,
)
from infra.git import git, run, show, worktree
from infra.markdown import table
from infra.plans.judge.report import markdown
from infra.settings import PINS_FILE, load_environment

# The token a promotion or rollback pull request is opened with (a GitHub App installation token
# from actions/create-github-app-token in the workflows).
TOKEN_VAR = "PROMOTION_TOKEN"  # noqa: S105 - the variable's name, not a token


class ReleaseError(PromotionError):
    """A release that cannot be found or restored; one line, nothing pushed."""


def deployed_commits(repo: Repository, environment: str) -> list[str]:
    """Commits successfully deployed to ``environment``, newest first, each once.

    A commit counts when every deployment of it (one per stack job) ended in success.
    """
    try:
        deployments = list(repo.get_deployments(environment=environment))
        outcome: dict[str, bool] = {}
        order: list[str] = []
        for deployment in deployments:  # newest first, as GitHub lists them
            statuses = list(deployment.get_statuses())
            ok = bool(statuses) and statuses[0].state == "success"
            if deployment.sha not in outcome:
                order.append(deployment.sha)
                outcome[deployment.sha] = ok
            else:
                outcome[deployment.sha] = outcome[deployment.sha] and ok
    except GithubException as exc:
        raise ReleaseError(f"deployments of {environment}: {message(exc)}") from None
    return [sha for sha in order if outcome[sha]]


def deployed_commit(repo: Repository, environment: str) -> str:
    found = deployed_commits(repo, environment)
    if not found:
        raise ReleaseError(f"{environment} has no successful deployment to promote or roll back")
    return found[0]


def app_repository() -> Repository:
    """The repository as the GitHub App: refuses when no App token is set."""
    try:
        return repository(connection(token_var=TOKEN_VAR))
    except GitHubError:
        raise ReleaseError(
            f"{TOKEN_VAR} is not set: promotion and rollback pull requests are opened with a "
            "GitHub App token, because one opened with GITHUB_TOKEN triggers no workflow (no CI, "
            "no preview, no required checks)"
        ) from None


# -- git push and the pull request ----------------------------------------------------------------


def push_branch(checkout: Path, remote: str, branch: str) -> None:
    """Force-push ``branch`` (rebuilt each time), with the App token when the remote is HTTPS."""
    url = run(checkout, "remote", "get-url", remote).stdout.strip()
    config: list[str] = []
    token = os.environ.get(TOKEN_VAR, "")
    if url.startswith("https://") and token:
        # As actions/checkout authenticates: a header for this command only, not stored in .git.
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        host = "/".join(url.split("/")[:3]) + "/"
        config = [f"http.{host}.extraheader=AUTHORIZATION: basic {basic}"]
    refspec = f"refs/heads/{branch}:refs/heads/{branch}"
    git(checkout, "push", "--force", "--quiet", remote, refspec, config=config)


@dataclass(frozen=True)
class PullRequest:
    number: int
    created: bool


def open_or_update_pr(
    repo: Repository, branch: str, base: str, title: str, body: str
) -> PullRequest:
    """The open pull request from ``branch`` into ``base``, its body updated; or a new one."""
    check_length(body, "the pull request body")
    try:
        owner = repo.full_name.split("/")[0]
        for pull in repo.get_pulls(state="open", head=f"{owner}:{branch}", base=base):
            pull.edit(title=title, body=body)
            return PullRequest(pull.number, created=False)
        created = repo.create_pull(base=base, head=branch, title=title, body=body)
    except GithubException as exc:
        raise ReleaseError(f"pull request {branch} -> {base}: {message(exc)}") from None
    return PullRequest(created.number, created=True)


# -- rollback -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollback:
    environment: str
    branch: str
    commit: str
    restored_from: str  # the earlier deployed commit whose pins come back
    changes: list[PinChange]
    body: str


def rollback_branch(environment: str) -> str:
    return f"rollback/{environment}"


def previous_release(
    checkout: Path, environment: str, deployed: list[str], pins_path: str
) -> tuple[str, str]:
    """(current, previous): the newest deployed commit, the newest earlier one with other pins."""
    if not deployed:
        raise ReleaseError(f"{environment} has no successful deployment to roll back from")
    current = deployed[0]
    now = show(checkout, current, pins_path)
    for sha in deployed[1:]:
        if show(checkout, sha, pins_path) != now:
            return current, sha
    raise ReleaseError(
        f"{environment} has no earlier deployment with other pins than {current[:12]}; "
        "nothing to roll back to"
    )


def rollback(
    environment: str,
    *,
    checkout: Path,
    deployed: list[str],
    remote: str = "origin",
    preview: bool = True,
) -> Rollback:
    """Build ``rollback/<env>`` from the environment's branch with its previous release's pins."""
    checkout = checkout.resolve()
    pins_path = f"environments/{environment}/{PINS_FILE}"
    branch_of_env = load_environment(environment, checkout / "environments").branch
    target_ref = _resolve(checkout, remote, branch_of_env)
    current, previous = previous_release(checkout, environment, deployed, pins_path)
    restored = show(checkout, previous, pins_path)
    changes = pin_changes(
        _parse_pins(show(checkout, target_ref, pins_path), f"{target_ref}:{pins_path}"),
        _parse_pins(restored, f"{previous}:{pins_path}"),
    )
    branch = rollback_branch(environment)
    with worktree(checkout, target_ref, prefix="billing-rollback-") as tree:
        (tree / pins_path).write_bytes(restored)
        git(tree, "add", "--", pins_path)
        restores = f"this restores the pins it ran at {previous[:12]}, its previous deployment"
        lines = [
            f"Roll back {environment}'s pins to {previous[:12]}",
            "",
            f"{environment} runs {current[:12]}; {restores}:",
        ]
        lines += [f"- {c.line()}" for c in changes]
        git(tree, "commit", "--quiet", "--no-verify", "-m", "\n".join(lines) + "\n")
        commit = git(tree, "rev-parse", "HEAD")
        plans, diffs, verdicts = (
            _preview(checkout, target_ref, tree, environment) if preview else ([], [], [])
        )
    git(checkout, "branch", "--force", branch, commit)
    intro = (
        f"{environment} runs `{current}`. This pull request restores the pins of its previous "
        f"deployment, `{previous}`; sizing, settings and code stay as `{target_ref}` has them."
    )
    rows = [[f"`{c.key}`", f"`{c.before}`", f"`{c.after}`"] for c in changes]
    body = [
        f"# Roll back {environment}",
        "",
        intro,
        "",
        *table(["Pin", "now", "after rollback"], rows),
    ]
    body.append("")
    if plans:
        report = markdown(plans, diffs, target_ref, verdicts)
        body += [("#" + line) if line.startswith("#") else line for line in report.splitlines()]
    text = "\n".join(body).rstrip() + "\n"
    return Rollback(environment, branch, commit, previous, changes, text)


def write_body(text: str, path: Path | None) -> Path:
    out = path or Path(tempfile.mkdtemp(prefix="billing-release-")) / "body.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
