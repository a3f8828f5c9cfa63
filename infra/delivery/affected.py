"""Change detection: which stacks a diff touches, as JSON for a workflow matrix.

- shared infrastructure code (``infra/``, the noxfile, the lock, anything unrecognised): all stacks;
- ``environments/<env>/``: that environment's stacks (``environments/defaults.toml``: all);
- ``services/<name>/``: the environments whose pins reference the service (shared service code,
  such as ``services/billing/``, counts for every pinned service);
- documentation and tests only: none.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from infra.errors import InfraError
from infra.git import GitError
from infra.git import changed_files as git_changed_files
from infra.settings import (
    DEFAULTS_FILE,
    PINS_FILE,
    Cloud,
    SettingsError,
    known_environments,
    load_environment,
)

# Paths that change nothing a stack deploys.
_DOC_SUFFIXES = frozenset({".md", ".rst", ".png", ".svg"})
_NO_STACK_DIRS = frozenset({"docs", "tests", ".github"})
_NO_STACK_FILES = frozenset({"LICENSE", ".gitignore", ".pre-commit-config.yaml"})


class AffectedError(InfraError):
    """A base ref git cannot diff against."""


@dataclass(frozen=True, order=True)
class Stack:
    environment: str
    cloud: str

    @property
    def key(self) -> str:
        return f"{self.environment}-{self.cloud}"

    def as_matrix_entry(self) -> dict[str, str]:
        return {"environment": self.environment, "cloud": self.cloud, "stack": self.key}


def changed_files(repo: Path, base: str, head: str = "HEAD") -> list[str]:
    """Files that differ between the merge base of ``base`` and ``head``, and ``head``."""
    try:
        return git_changed_files(repo, f"{base}...{head}")
    except GitError as exc:
        raise AffectedError(f"--base {base}: {exc.detail}") from None


def _is_docs_or_tests(path: PurePosixPath) -> bool:
    if path.parts[0] in _NO_STACK_DIRS or path.name in _NO_STACK_FILES:
        return True
    if "tests" in path.parts[:-1]:
        return True
    return path.suffix.lower() in _DOC_SUFFIXES


def _pinned_services(environments_dir: Path, env: str) -> set[str]:
    pins = environments_dir / env / PINS_FILE
    try:
        with pins.open("rb") as handle:
            images = tomllib.load(handle).get("images", {})
    except (OSError, tomllib.TOMLDecodeError):
        # An unreadable pins file: the preview of that environment will name the problem.
        return {"*"}
    return set(images) if isinstance(images, dict) else {"*"}


def affected_stacks(files: list[str], environments_dir: Path, services_dir: Path) -> list[Stack]:
    """The stacks that ``files`` (repository-relative paths) touch."""
    envs = known_environments(environments_dir)
    touched: set[str] = set()
    for name in files:
        path = PurePosixPath(name)
        if _is_docs_or_tests(path):
            continue
        if path.parts[0] == "environments":
            if len(path.parts) >= 3 and path.parts[1] in envs:
                touched.add(path.parts[1])
            elif len(path.parts) == 2 and path.name == DEFAULTS_FILE:
                touched.update(envs)
            # A file of a removed or unknown environment deploys nothing.
            continue
        if path.parts[0] == "services" and len(path.parts) >= 2:
            service = path.parts[1]
            is_service = (services_dir / service / "manifest.toml").exists()
            for env in envs:
                pinned = _pinned_services(environments_dir, env)
                # Code outside a service's own folder (shared billing code) is in every image.
                if "*" in pinned or (service in pinned if is_service else bool(pinned)):
                    touched.add(env)
            continue
        # infra/, noxfile.py, pyproject.toml, uv.lock and anything unrecognised: every stack.
        touched.update(envs)
    stacks: list[Stack] = []
    for env in envs:
        if env not in touched:
            continue
        try:
            clouds = [c.value for c in load_environment(env, environments_dir).clouds]
        except SettingsError:
            # A broken environment still needs its preview (which reports the error): keep its
            # clouds from the defaults so the matrix includes it.
            clouds = [c.value for c in Cloud]
        stacks += [Stack(env, cloud) for cloud in clouds]
    return sorted(stacks, key=lambda s: (envs.index(s.environment), s.cloud))


def affected(
    repo: Path, base: str, head: str = "HEAD", environments: list[str] | None = None
) -> list[Stack]:
    """The stacks the diff from ``base`` to ``head`` in ``repo`` touches."""
    files = changed_files(repo, base, head)
    stacks = affected_stacks(files, repo / "environments", repo / "services")
    if environments:
        stacks = [s for s in stacks if s.environment in environments]
    return stacks


def matrix_json(stacks: list[Stack]) -> str:
    """``{"include": [...]}`` for ``strategy.matrix: ${{ fromJSON(...) }}``."""
    return json.dumps({"include": [s.as_matrix_entry() for s in stacks]}, separators=(",", ":"))


def github_outputs(stacks: list[Stack]) -> str:
    """Lines for $GITHUB_OUTPUT: matrix, environments (JSON list) and any (true/false)."""
    envs = list(dict.fromkeys(s.environment for s in stacks))
    return (
        f"matrix={matrix_json(stacks)}\n"
        f"environments={json.dumps(envs, separators=(',', ':'))}\n"
        f"any={'true' if stacks else 'false'}\n"
    )
