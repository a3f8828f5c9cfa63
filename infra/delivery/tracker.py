"""One GitHub issue per subject (a stack's drift, a stack's failed deploy, a failed promotion),
found again by a stable marker in its body: reopened rather than duplicated, commented on at every
change so its subscribers are notified, closed when the subject is healthy again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from github import GithubException
from github.Repository import Repository

from infra.delivery.github import GitHubError, check_length, find_marked_issue, message


class Action(StrEnum):
    OPENED = "opened"
    REOPENED = "reopened"
    UPDATED = "updated"
    CLOSED = "closed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Subject:
    """What an issue is about: ``kind`` and ``key`` make its marker (``drift``, ``dev-aws``)."""

    kind: str
    key: str
    label: str
    title: str

    @property
    def marker(self) -> str:
        return f"<!-- billing-{self.kind}:{self.key} -->"


@dataclass(frozen=True)
class Synced:
    subject: Subject
    action: Action
    number: int | None


def sync_issue(
    repo: Repository, subject: Subject, *, problem: bool, body: str, note: str
) -> Synced:
    """Bring the subject's issue in line: open/reopen/update it on a problem, close it when clean.

    ``body`` is the current state (the marker is added); ``note`` is the comment on a change.
    """
    text = f"{subject.marker}\n{body.strip()}\n"
    check_length(text, f"the issue body for {subject.key}")
    check_length(note, f"the comment for {subject.key}")
    issue = find_marked_issue(repo, subject.marker, subject.label)
    try:
        if not problem:
            if issue is None or issue.state != "open":
                return Synced(subject, Action.UNCHANGED, issue.number if issue else None)
            issue.create_comment(note)
            issue.edit(state="closed", state_reason="completed")
            return Synced(subject, Action.CLOSED, issue.number)
        if issue is None:
            created = repo.create_issue(title=subject.title, body=text, labels=[subject.label])
            return Synced(subject, Action.OPENED, created.number)
        if issue.state != "open":
            issue.edit(state="open", body=text)
            issue.create_comment(note)
            return Synced(subject, Action.REOPENED, issue.number)
        if (issue.body or "").strip() == text.strip():
            return Synced(subject, Action.UNCHANGED, issue.number)
        issue.edit(body=text)
        issue.create_comment(note)
        return Synced(subject, Action.UPDATED, issue.number)
    except GithubException as exc:
        raise GitHubError(f"issue for {subject.key}: {message(exc)}") from None


def open_issue(repo: Repository, subject: Subject) -> int | None:
    """The number of the subject's open issue, or None."""
    issue = find_marked_issue(repo, subject.marker, subject.label)
    return issue.number if issue is not None and issue.state == "open" else None
