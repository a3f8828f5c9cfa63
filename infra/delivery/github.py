"""GitHub's REST API as delivery uses it, through PyGithub: one comment per pull request updated in
place, one issue per subject found by a stable marker, deployments, reviews and permissions.

The connection comes from the variables GitHub Actions sets on every runner (``GITHUB_API_URL``,
``GITHUB_REPOSITORY``) and a token variable; the tests point ``GITHUB_API_URL`` at a fake server on
127.0.0.1 (tests/infra/delivery/fake_github.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from github import Auth, Github, GithubException
from github.Issue import Issue
from github.Repository import Repository

from infra.errors import InfraError

# "Body is too long (maximum is 65536 characters)": GitHub's 422 for a longer issue or comment
# body (seen in peter-evans/create-or-update-comment#182, danger/danger#424, release-please#1034).
BODY_LIMIT = 65_536
DEFAULT_API_URL = "https://api.github.com"


class GitHubError(InfraError):
    """A GitHub call that could not be made or was refused; the message is one line."""


@dataclass(frozen=True)
class Connection:
    api_url: str
    repository: str
    token: str


def connection(
    environ: Mapping[str, str] | None = None,
    token_var: str = "GITHUB_TOKEN",  # noqa: S107 - the variable's name, not a token
) -> Connection:
    """Where and as whom to call GitHub, from the runner's variables; a missing one is named."""
    env = os.environ if environ is None else environ
    repository = env.get("GITHUB_REPOSITORY", "")
    token = env.get(token_var, "")
    if "/" not in repository:
        raise GitHubError("GITHUB_REPOSITORY is not set to OWNER/NAME (GitHub Actions sets it)")
    if not token:
        raise GitHubError(f"{token_var} is not set: no token to call GitHub's API with")
    return Connection(env.get("GITHUB_API_URL") or DEFAULT_API_URL, repository, token)


def repository(conn: Connection) -> Repository:
    """The repository, without a request until the first call (``lazy=True``)."""
    # retry=None: a refused call fails at once with GitHub's message instead of backing off.
    # lazy: an object is fetched when a value of it is read, not when it is named.
    client = Github(
        auth=Auth.Token(conn.token), base_url=conn.api_url, retry=None, timeout=30, lazy=True
    )
    return client.get_repo(conn.repository)


def message(exc: GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    errors = data.get("errors")
    detail = (
        errors[0].get("message", "")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict)
        else ""
    )
    text = str(data.get("message", "")) or str(exc)
    return f"GitHub answered {exc.status}: {text}{f' ({detail})' if detail else ''}"


def check_length(body: str, what: str) -> None:
    if len(body) > BODY_LIMIT:
        raise GitHubError(f"{what} is {len(body)} characters; GitHub's limit is {BODY_LIMIT}")


def upsert_comment(repo: Repository, number: int, marker: str, body: str) -> tuple[int, bool]:
    """Edit the comment carrying ``marker`` on issue or PR ``number``, or create it.

    Returns the comment's id and whether it was created.
    """
    check_length(body, "the comment")
    try:
        issue = repo.get_issue(number)
        for comment in issue.get_comments():
            if marker in (comment.body or ""):
                comment.edit(body)
                return comment.id, False
        created = issue.create_comment(body)
    except GithubException as exc:
        raise GitHubError(f"comment on #{number}: {message(exc)}") from None
    return created.id, True


def find_marked_issue(repo: Repository, marker: str, label: str) -> Issue | None:
    """The issue whose body carries ``marker``: an open one first, else the newest closed one."""
    try:
        found = [
            issue
            for issue in repo.get_issues(state="all", labels=[label])
            if issue.pull_request is None and marker in (issue.body or "")
        ]
    except GithubException as exc:
        raise GitHubError(f"list issues labelled {label}: {message(exc)}") from None
    found.sort(key=lambda i: (i.state == "open", i.number), reverse=True)
    return found[0] if found else None
