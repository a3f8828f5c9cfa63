"""A fake of GitHub's REST API on 127.0.0.1: the calls delivery makes, with GitHub's documented
behaviour where the flow depends on it.

- Issues and pull requests share one number space, and ``GET /repos/{o}/{r}/issues`` lists both
  (pull requests carry a ``pull_request`` key): https://docs.github.com/rest/issues/issues#list-repository-issues
- A body longer than 65,536 characters is refused with 422 "Body is too long (maximum is 65536
  characters)" (peter-evans/create-or-update-comment#182, danger/danger#424).
- A pull request opened with the workflow's GITHUB_TOKEN triggers no workflow run ("events
  triggered by the GITHUB_TOKEN ... will not create a new workflow run",
  https://docs.github.com/actions/using-workflows/triggering-a-workflow): the fake records
  ``triggers_workflows`` per pull request from the token that opened it.
- Deployments and their statuses per environment, newest first
  (https://docs.github.com/rest/deployments/deployments#list-deployments).
- ``GET /repos/{o}/{r}/collaborators/{user}/permission`` answers admin, maintain, write, triage,
  read or none (https://docs.github.com/rest/collaborators/collaborators).
- ``GET /repos/{o}/{r}/commits/{sha}/pulls`` lists the pull requests a commit belongs to, the one
  it was merged by included (https://docs.github.com/rest/commits/commits).
- ``POST /repos/{o}/{r}/actions/workflows/{file}/dispatches`` answers 204 and starts a run on the
  ref (https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event); a
  workflow_dispatch made with GITHUB_TOKEN does start a run, unlike other events.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from infra.git import commit_of

BODY_LIMIT = 65_536
WORKFLOW_TOKEN = "ghs_workflow_token_of_the_run"
APP_TOKEN = "ghs_installation_token_of_the_app"

Json = dict[str, Any]
Query = dict[str, list[str]]
Answer = tuple[int, Any]
Handler = Callable[["FakeGitHub", re.Match[str], Json, Query, str], Answer]


@dataclass
class Call:
    method: str
    path: str
    token: str


@dataclass
class FakeGitHub:
    """State of one repository, served over HTTP; tests read and seed it directly."""

    owner: str = "example-org"
    name: str = "billing"
    url: str = ""
    issues: dict[int, Json] = field(default_factory=dict)
    comments: dict[int, Json] = field(default_factory=dict)
    reviews: dict[int, list[Json]] = field(default_factory=dict)
    deployments: list[Json] = field(default_factory=list)
    statuses: dict[int, list[Json]] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)
    dispatches: list[tuple[str, str]] = field(default_factory=list)  # (workflow file, ref)
    calls: list[Call] = field(default_factory=list)
    # The bare repository behind the fake: a new pull request's head sha is read from it.
    git_dir: Path | None = None
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(1000, 10**9)))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def repo_path(self) -> str:
        return f"/repos/{self.owner}/{self.name}"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def _next_number(self) -> int:
        return max(self.issues, default=0) + 1

    # -- seeding, as people and other workflows would -------------------------------------------

    def add_issue(self, title: str, body: str, labels: list[str], state: str = "open") -> Json:
        issue = self._issue(self._next_number(), title, body, labels, state)
        self.issues[issue["number"]] = issue
        return issue

    def add_pull(self, head: str, base: str, title: str = "Change") -> int:
        """A pull request opened by a person (its head sha read from the bare repository)."""
        issue = self._issue(self._next_number(), title, "", [], "open")
        issue["head"] = {"ref": head, "sha": self.branch_sha(head)}
        issue["base"] = {"ref": base}
        issue["merged"] = False
        issue["merge_commit_sha"] = None
        self.issues[issue["number"]] = issue
        return int(issue["number"])

    def merge_pull(self, number: int, merge_sha: str) -> None:
        """The pull request merged as ``merge_sha`` (made in the bare repository by the test)."""
        self.issues[number].update(state="closed", merged=True, merge_commit_sha=merge_sha)

    def add_review(self, pr: int, user: str, state: str, body: str) -> None:
        self.reviews.setdefault(pr, []).append(
            {
                "id": next(self._ids),
                "user": self._user(user),
                "state": state,
                "body": body,
                "commit_id": self.issues[pr]["head"]["sha"],
            }
        )

    def add_deployment(self, environment: str, sha: str, state: str) -> Json:
        """A deployment as a job with ``environment:`` creates one, with its final status."""
        ident = next(self._ids)
        deployment = {
            "id": ident,
            "sha": sha,
            "ref": sha,
            "environment": environment,
            "task": "deploy",
            "created_at": f"2026-11-{len(self.deployments) + 1:02d}T10:00:00Z",
            "url": f"{self.url}{self.repo_path}/deployments/{ident}",
            "statuses_url": f"{self.url}{self.repo_path}/deployments/{ident}/statuses",
        }
        self.deployments.append(deployment)
        self.statuses[ident] = [{"id": next(self._ids), "state": state}]
        return deployment

    def branch_sha(self, branch: str) -> str:
        if self.git_dir is None:
            return ""
        return commit_of(self.git_dir, f"refs/heads/{branch}") or ""

    def pulls(self) -> list[Json]:
        return [i for i in self.issues.values() if "head" in i]

    def comments_on(self, number: int) -> list[Json]:
        return [c for c in self.comments.values() if c["issue_number"] == number]

    def issues_labelled(self, label: str) -> list[Json]:
        return [
            i
            for i in self.issues.values()
            if "head" not in i and label in [x["name"] for x in i["labels"]]
        ]

    # -- JSON shapes ------------------------------------------------------------------------------

    def _user(self, login: str) -> Json:
        kind = "Bot" if login.endswith("[bot]") else "User"
        return {"login": login, "id": abs(hash(login)) % 10**6, "type": kind}

    def _issue(self, number: int, title: str, body: str, labels: list[str], state: str) -> Json:
        return {
            "number": number,
            "id": next(self._ids),
            "title": title,
            "body": body,
            "state": state,
            "labels": [{"name": name} for name in labels],
            "url": f"{self.url}{self.repo_path}/issues/{number}",
            "html_url": f"https://github.com/{self.full_name}/issues/{number}",
            "comments_url": f"{self.url}{self.repo_path}/issues/{number}/comments",
            "user": self._user("github-actions[bot]"),
        }

    def _pull_json(self, issue: Json) -> Json:
        pull = {k: v for k, v in issue.items() if k != "pull_request"}
        pull["url"] = f"{self.url}{self.repo_path}/pulls/{issue['number']}"
        pull["html_url"] = f"https://github.com/{self.full_name}/pull/{issue['number']}"
        pull["issue_url"] = issue["url"]
        return pull

    def _issue_json(self, issue: Json) -> Json:
        public = {
            k: v
            for k, v in issue.items()
            if k not in ("head", "base", "triggers_workflows", "opened_with")
        }
        if "head" in issue:
            public["pull_request"] = {"url": f"{self.url}{self.repo_path}/pulls/{issue['number']}"}
        return public


def _too_long(body: object) -> tuple[int, Json] | None:
    if isinstance(body, str) and len(body) > BODY_LIMIT:
        return 422, {
            "message": "Validation Failed",
            "errors": [
                {
                    "resource": "IssueComment",
                    "code": "custom",
                    "field": "body",
                    "message": f"body is too long (maximum is {BODY_LIMIT} characters)",
                }
            ],
        }
    return None


def _get_repo(gh: FakeGitHub, _m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    return 200, {
        "id": 1,
        "name": gh.name,
        "full_name": gh.full_name,
        "owner": gh._user(gh.owner),
        "url": f"{gh.url}{gh.repo_path}",
        "default_branch": "dev",
    }


def _list_issues(gh: FakeGitHub, _m: re.Match[str], _b: Json, q: Query, _t: str) -> Answer:
    state = q.get("state", ["open"])[0]
    labels = [x for x in q.get("labels", [""])[0].split(",") if x]
    found = []
    for issue in sorted(gh.issues.values(), key=lambda i: -i["number"]):
        names = [x["name"] for x in issue["labels"]]
        if state != "all" and issue["state"] != state:
            continue
        if any(label not in names for label in labels):
            continue
        found.append(gh._issue_json(issue))
    return 200, found


def _create_issue(gh: FakeGitHub, _m: re.Match[str], b: Json, _q: Query, _t: str) -> Answer:
    if (refused := _too_long(b.get("body"))) is not None:
        return refused
    if not b.get("title"):
        return 422, {
            "message": "Validation Failed",
            "errors": [{"field": "title", "code": "missing_field"}],
        }
    labels = [x if isinstance(x, str) else x["name"] for x in b.get("labels", [])]
    issue = gh.add_issue(b["title"], b.get("body") or "", labels)
    return 201, gh._issue_json(issue)


def _issue_or_404(gh: FakeGitHub, number: int) -> Json | None:
    return gh.issues.get(number)


def _get_issue(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    issue = _issue_or_404(gh, int(m["number"]))
    return (200, gh._issue_json(issue)) if issue else (404, {"message": "Not Found"})


def _edit_issue(gh: FakeGitHub, m: re.Match[str], b: Json, _q: Query, _t: str) -> Answer:
    issue = _issue_or_404(gh, int(m["number"]))
    if issue is None:
        return 404, {"message": "Not Found"}
    if (refused := _too_long(b.get("body"))) is not None:
        return refused
    for key in ("title", "body", "state"):
        if key in b:
            issue[key] = b[key]
    if "labels" in b:
        issue["labels"] = [{"name": x if isinstance(x, str) else x["name"]} for x in b["labels"]]
    return 200, gh._issue_json(issue)


def _list_comments(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    number = int(m["number"])
    if number not in gh.issues:
        return 404, {"message": "Not Found"}
    return 200, [
        {k: v for k, v in c.items() if k != "issue_number"} for c in gh.comments_on(number)
    ]


def _create_comment(gh: FakeGitHub, m: re.Match[str], b: Json, _q: Query, _t: str) -> Answer:
    number = int(m["number"])
    if number not in gh.issues:
        return 404, {"message": "Not Found"}
    if (refused := _too_long(b.get("body"))) is not None:
        return refused
    ident = next(gh._ids)
    comment = {
        "id": ident,
        "body": b.get("body", ""),
        "issue_number": number,
        "user": gh._user("github-actions[bot]"),
        "url": f"{gh.url}{gh.repo_path}/issues/comments/{ident}",
        "html_url": f"https://github.com/{gh.full_name}/issues/{number}",
    }
    gh.comments[ident] = comment
    return 201, {k: v for k, v in comment.items() if k != "issue_number"}


def _edit_comment(gh: FakeGitHub, m: re.Match[str], b: Json, _q: Query, _t: str) -> Answer:
    comment = gh.comments.get(int(m["id"]))
    if comment is None:
        return 404, {"message": "Not Found"}
    if (refused := _too_long(b.get("body"))) is not None:
        return refused
    comment["body"] = b.get("body", "")
    return 200, {k: v for k, v in comment.items() if k != "issue_number"}


def _list_pulls(gh: FakeGitHub, _m: re.Match[str], _b: Json, q: Query, _t: str) -> Answer:
    state = q.get("state", ["open"])[0]
    head = q.get("head", [""])[0]
    base = q.get("base", [""])[0]
    found = []
    for pull in gh.pulls():
        if state != "all" and pull["state"] != state:
            continue
        # `head` filters as "owner:branch" (https://docs.github.com/rest/pulls/pulls#list-pull-requests).
        if head and f"{gh.owner}:{pull['head']['ref']}" != head:
            continue
        if base and pull["base"]["ref"] != base:
            continue
        found.append(gh._pull_json(pull))
    return 200, found


def _create_pull(gh: FakeGitHub, _m: re.Match[str], b: Json, _q: Query, token: str) -> Answer:
    if (refused := _too_long(b.get("body"))) is not None:
        return refused
    for pull in gh.pulls():
        if (
            pull["state"] == "open"
            and pull["head"]["ref"] == b["head"]
            and pull["base"]["ref"] == b["base"]
        ):
            exists = f"A pull request already exists for {gh.owner}:{b['head']}."
            return 422, {"message": "Validation Failed", "errors": [{"message": exists}]}
    issue = gh._issue(gh._next_number(), b["title"], b.get("body") or "", [], "open")
    issue["head"] = {"ref": b["head"], "sha": gh.branch_sha(b["head"])}
    issue["base"] = {"ref": b["base"]}
    issue["opened_with"] = token
    issue["triggers_workflows"] = token != WORKFLOW_TOKEN
    issue["merged"] = False
    gh.issues[issue["number"]] = issue
    return 201, gh._pull_json(issue)


def _get_pull(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    issue = gh.issues.get(int(m["number"]))
    if issue is None or "head" not in issue:
        return 404, {"message": "Not Found"}
    return 200, gh._pull_json(issue)


def _edit_pull(gh: FakeGitHub, m: re.Match[str], b: Json, q: Query, t: str) -> Answer:
    status, _ = _edit_issue(gh, m, b, q, t)
    if status != 200:
        return status, _
    return 200, gh._pull_json(gh.issues[int(m["number"])])


def _list_reviews(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    return 200, gh.reviews.get(int(m["number"]), [])


def _list_deployments(gh: FakeGitHub, _m: re.Match[str], _b: Json, q: Query, _t: str) -> Answer:
    environment = q.get("environment", [""])[0]
    sha = q.get("sha", [""])[0]
    found = [
        d
        for d in reversed(gh.deployments)
        if environment in ("", d["environment"]) and sha in ("", d["sha"])
    ]
    return 200, found


def _list_statuses(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    ident = int(m["id"])
    if ident not in gh.statuses:
        return 404, {"message": "Not Found"}
    return 200, list(reversed(gh.statuses[ident]))


def _get_commit(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    sha = m["sha"]
    return 200, {"sha": sha, "url": f"{gh.url}{gh.repo_path}/commits/{sha}"}


def _commit_pulls(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    sha = m["sha"]
    found = [
        gh._pull_json(p)
        for p in gh.pulls()
        if p.get("merge_commit_sha") == sha or p["head"]["sha"] == sha
    ]
    return 200, found


def _get_workflow(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    name = m["workflow"]
    url = f"{gh.url}{gh.repo_path}/actions/workflows/{name}"
    return 200, {
        "id": abs(hash(name)) % 10**6,
        "name": name,
        "state": "active",
        "url": url,
        "path": f".github/workflows/{name}",
    }


def _dispatch(gh: FakeGitHub, m: re.Match[str], b: Json, _q: Query, _t: str) -> Answer:
    if not gh.branch_sha(str(b.get("ref", ""))) and gh.git_dir is not None:
        return 422, {"message": f"No ref found for: {b.get('ref')}"}
    gh.dispatches.append((m["workflow"], str(b.get("ref", ""))))
    return 204, None


def _permission(gh: FakeGitHub, m: re.Match[str], _b: Json, _q: Query, _t: str) -> Answer:
    user = m["user"]
    level = gh.permissions.get(user, "none")
    return 200, {"permission": level, "role_name": level, "user": gh._user(user)}


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+$"), _get_repo),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/issues$"), _list_issues),
    ("POST", re.compile(r"^/repos/[^/]+/[^/]+/issues$"), _create_issue),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/issues/(?P<number>\d+)$"), _get_issue),
    ("PATCH", re.compile(r"^/repos/[^/]+/[^/]+/issues/(?P<number>\d+)$"), _edit_issue),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/issues/(?P<number>\d+)/comments$"), _list_comments),
    ("POST", re.compile(r"^/repos/[^/]+/[^/]+/issues/(?P<number>\d+)/comments$"), _create_comment),
    ("PATCH", re.compile(r"^/repos/[^/]+/[^/]+/issues/comments/(?P<id>\d+)$"), _edit_comment),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/pulls$"), _list_pulls),
    ("POST", re.compile(r"^/repos/[^/]+/[^/]+/pulls$"), _create_pull),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/pulls/(?P<number>\d+)$"), _get_pull),
    ("PATCH", re.compile(r"^/repos/[^/]+/[^/]+/pulls/(?P<number>\d+)$"), _edit_pull),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/pulls/(?P<number>\d+)/reviews$"), _list_reviews),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/deployments$"), _list_deployments),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/deployments/(?P<id>\d+)/statuses$"), _list_statuses),
    (
        "GET",
        re.compile(r"^/repos/[^/]+/[^/]+/collaborators/(?P<user>[^/]+)/permission$"),
        _permission,
    ),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/commits/(?P<sha>[0-9a-f]+)$"), _get_commit),
    ("GET", re.compile(r"^/repos/[^/]+/[^/]+/commits/(?P<sha>[0-9a-f]+)/pulls$"), _commit_pulls),
    (
        "GET",
        re.compile(r"^/repos/[^/]+/[^/]+/actions/workflows/(?P<workflow>[^/]+)$"),
        _get_workflow,
    ),
    (
        "POST",
        re.compile(r"^/repos/[^/]+/[^/]+/actions/workflows/(?P<workflow>[^/]+)/dispatches$"),
        _dispatch,
    ),
]


def serve(gh: FakeGitHub) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``gh`` on a free port of 127.0.0.1; ``gh.url`` is set to its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

        def _answer(self) -> None:
            parsed = urlparse(self.path)
            token = (
                self.headers.get("Authorization", "").removeprefix("token ").removeprefix("Bearer ")
            )
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            status, payload = 404, {"message": "Not Found"}
            with gh._lock:
                gh.calls.append(Call(self.command, parsed.path, token))
                if token not in (WORKFLOW_TOKEN, APP_TOKEN):
                    status, payload = 401, {"message": "Bad credentials"}
                else:
                    for method, pattern, handler in ROUTES:
                        match = pattern.match(parsed.path)
                        if method == self.command and match:
                            status, payload = handler(
                                gh, match, body, parse_qs(parsed.query), token
                            )
                            break
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815 - the stdlib's names

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    gh.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
