"""Change detection: which stacks a diff touches, in a real git repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infra.cli import main
from infra.delivery.affected import AffectedError, affected, affected_stacks, github_outputs
from infra.git import git
from infra.settings import ENVIRONMENTS_DIR, REPO_ROOT

ALL = ["dev-aws", "dev-gcp", "staging-aws", "staging-gcp", "production-aws", "production-gcp"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """environments/, service manifests and a little code, committed on main."""
    root = tmp_path / "repo"
    shutil.copytree(ENVIRONMENTS_DIR, root / "environments")
    for manifest in REPO_ROOT.glob("services/*/manifest.toml"):
        target = root / manifest.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(manifest, target)
    for path in (
        "infra/aws/network.py",
        "services/billing/models.py",
        "services/api/app.py",
        "docs/delivery.md",
        "README.md",
        "tests/infra/test_x.py",
    ):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("# v1\n", encoding="utf-8")
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(root))
    git(root, "config", "user.email", "ci@example.com")
    git(root, "config", "user.name", "CI")
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "initial")
    return root


def change(repo: Path, *paths: str) -> None:
    for path in paths:
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as handle:
            handle.write("# changed\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "change")


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["README.md", "docs/delivery.md"], []),
        (["tests/infra/test_x.py"], []),
        (["environments/staging/settings.toml"], ["staging-aws", "staging-gcp"]),
        (
            ["environments/dev/pins.toml", "environments/production/settings.toml"],
            ["dev-aws", "dev-gcp", "production-aws", "production-gcp"],
        ),
        (["environments/defaults.toml"], ALL),
        (["infra/aws/network.py"], ALL),
        (["noxfile.py", "docs/delivery.md"], ALL),
        (["services/api/app.py"], ALL),  # every environment pins the api image
        (["services/billing/models.py"], ALL),  # shared service code is in every image
    ],
)
def test_affected(repo: Path, paths: list[str], expected: list[str]) -> None:
    change(repo, *paths)
    assert [s.key for s in affected(repo, "HEAD~1")] == expected


def test_service_reaches_only_environments_that_pin_it(tmp_path: Path) -> None:
    environments = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, environments)
    services = tmp_path / "services"
    (services / "reports").mkdir(parents=True)
    (services / "reports" / "manifest.toml").write_text('name = "reports"\n', encoding="utf-8")
    pins = environments / "dev" / "pins.toml"
    pins.write_text(pins.read_text() + 'reports = "ghcr.io/example-org/billing-reports:0.1.0"\n')
    stacks = affected_stacks(["services/reports/job.py"], environments, services)
    assert [s.key for s in stacks] == ["dev-aws", "dev-gcp"]


def test_env_filter_and_github_outputs(repo: Path) -> None:
    change(repo, "infra/aws/network.py")
    stacks = affected(repo, "HEAD~1", environments=["staging"])
    assert [s.key for s in stacks] == ["staging-aws", "staging-gcp"]
    lines = github_outputs(stacks).splitlines()
    assert lines[1:] == ['environments=["staging"]', "any=true"]
    matrix = json.loads(lines[0].removeprefix("matrix="))
    assert matrix["include"][0] == {
        "environment": "staging",
        "cloud": "aws",
        "stack": "staging-aws",
    }
    assert github_outputs([]).splitlines() == [
        'matrix={"include":[]}',
        "environments=[]",
        "any=false",
    ]


def test_unknown_base_is_one_clear_error(repo: Path) -> None:
    with pytest.raises(AffectedError, match="--base no-such-ref: "):
        affected(repo, "no-such-ref")


def test_cli_prints_matrix_json(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change(repo, "environments/dev/settings.toml")
    output = tmp_path / "github-output"
    code = main(
        ["affected", "--base", "HEAD~1", "--repo", str(repo), "--github-output", str(output)]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert [e["stack"] for e in printed["include"]] == ["dev-aws", "dev-gcp"]
    assert "any=true" in output.read_text()
    assert main(["affected", "--base", "nope", "--repo", str(repo)]) == 1
    assert capsys.readouterr().err.startswith("error: --base nope: ")
