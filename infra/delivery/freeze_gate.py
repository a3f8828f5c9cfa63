"""Change freezes as a required pull-request check, and who may break the glass.

A pull request into a frozen environment fails the ``freeze`` check unless a person with write
access approved its current head with a review that says ``Break-glass: <reason>``. A deploy
goes through a freeze only with that approval on the pull request it merges, or with the
``break-glass`` input of a ``workflow_dispatch`` run by a user with write access. A commit message
never counts: a merge can bring in any text.

Permissions come from ``GET /repos/{owner}/{repo}/collaborators/{username}/permission``
(admin, maintain, write, triage, read or none; https://docs.github.com/rest/collaborators/collaborators).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from github import GithubException
from github.Repository import Repository

from infra.delivery.github import GitHubError, message

# Roles that can merge into a protected branch, so may approve going through a freeze.
APPROVERS = frozenset({"admin", "maintain", "write"})
_BREAK_GLASS = re.compile(r"^\s*Break-glass:\s*(\S.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class BreakGlass:
    reason: str
    by: str

    def line(self) -> str:
        return f"{self.reason} (approved by {self.by})"


def may_approve(repo: Repository, login: str) -> bool:
    try:
        return repo.get_collaborator_permission(login) in APPROVERS
    except GithubException as exc:
        raise GitHubError(f"permission of {login}: {message(exc)}") from None


def approved_break_glass(repo: Repository, pr: int) -> BreakGlass | None:
    """The newest approving review of the PR's current head that breaks the glass, if any."""
    try:
        pull = repo.get_pull(pr)
        head = pull.head.sha
        reviews = list(pull.get_reviews())
    except GithubException as exc:
        raise GitHubError(f"reviews of #{pr}: {message(exc)}") from None
    for review in reversed(reviews):
        # An approval of an earlier head does not cover what was pushed after it.
        if review.state != "APPROVED" or review.commit_id != head:
            continue
        found = _BREAK_GLASS.search(review.body or "")
        if found and may_approve(repo, review.user.login):
            return BreakGlass(found.group(1), review.user.login)
    return None


def dispatched_break_glass(repo: Repository, actor: str, reason: str) -> BreakGlass | None:
    """A ``workflow_dispatch`` input counts only from a user who may approve."""
    reason = reason.strip()
    if not reason:
        return None
    if not may_approve(repo, actor):
        raise GitHubError(
            f"{actor} may not break the glass: it needs write access to the repository"
        )
    return BreakGlass(reason, actor)
