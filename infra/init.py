"""`nox -s init`: write an organisation's real values into one environment's files.

Each flag sets keys in ``environments/<env>/settings.toml`` (or ``pins.toml`` for images); the
edit keeps every other line and comment. The edited files are validated by the typed loader in
a scratch copy first: on any problem the error names the file and the key and nothing is
written. The unified diff of what changed is printed, and the example values still left (which
a live run would refuse) are listed.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.placeholders import find_examples
from infra.settings import (
    ENVIRONMENTS_DIR,
    PINS_FILE,
    SETTINGS_FILE,
    SettingsError,
    load_environment,
    validate_name,
)

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")
_ASSIGNMENT = re.compile(r"^(\s*)([A-Za-z0-9_\-]+)\s*=")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def set_key(text: str, section: str, key: str, value: Any) -> str:
    """``text`` with ``key`` of ``[section]`` set to ``value`` (added when missing); other lines,
    comments included, are kept. ``section`` "" is the top of the file."""
    lines = text.splitlines()
    current = ""
    start = 0 if section == "" else None
    end = len(lines)
    for index, line in enumerate(lines):
        header = _HEADER.match(line)
        if header is not None:
            if start is not None and current == section:
                end = index
                break
            current = header.group(1)
            if current == section:
                start = index + 1
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment is not None and current == section and assignment.group(2) == key:
            lines[index] = f"{assignment.group(1)}{key} = {toml_value(value)}"
            return "\n".join(lines) + "\n"
    entry = f"{key} = {toml_value(value)}"
    if start is None:
        lines += ["", f"[{section}]", entry]
    else:
        # After the section's last assignment, before trailing comments and blank lines.
        insert = start
        for index in range(start, end):
            if _ASSIGNMENT.match(lines[index]):
                insert = index + 1
        lines.insert(insert, entry)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Edit:
    file: str  # settings.toml or pins.toml
    section: str
    key: str
    value: Any


Planner = Callable[[argparse.Namespace], list[Edit]]


def _state_bucket(args: argparse.Namespace) -> list[Edit]:
    edits = []
    if args.aws_state_bucket:
        region = args.aws_region or "us-east-1"
        edits += [
            Edit(
                SETTINGS_FILE,
                "pulumi.aws",
                "backend_url",
                f"s3://{args.aws_state_bucket}?region={region}",
            ),
            Edit(
                SETTINGS_FILE,
                "pulumi.aws",
                "secrets_provider",
                f"awskms://alias/billing-pulumi-{args.env}?region={region}",
            ),
        ]
    if args.gcp_state_bucket:
        if not args.gcp_project:
            message = "--gcp-state-bucket needs --gcp-project (the key lives there)"
            raise SettingsError(ENVIRONMENTS_DIR / args.env / SETTINGS_FILE, "pulumi.gcp", message)
        region = args.gcp_region or "us-central1"
        key = (
            f"gcpkms://projects/{args.gcp_project}/locations/{region}/keyRings/"
            f"billing-pulumi/cryptoKeys/pulumi-{args.env}"
        )
        edits += [
            Edit(SETTINGS_FILE, "pulumi.gcp", "backend_url", f"gs://{args.gcp_state_bucket}"),
            Edit(SETTINGS_FILE, "pulumi.gcp", "secrets_provider", key),
        ]
    return edits


def edits_from(args: argparse.Namespace) -> list[Edit]:
    """The keys the flags set, in the order they are written."""
    simple = [
        ("repository", "", "repository"),
        ("aws_region", "aws", "region"),
        ("aws_domain", "aws", "domain"),
        ("hosted_zone_id", "aws", "hosted_zone_id"),
        ("gcp_region", "gcp", "region"),
        ("gcp_domain", "gcp", "domain"),
        ("dns_zone", "gcp", "dns_zone"),
        ("alarm_email", "alarms", "email"),
    ]
    edits = [
        Edit(SETTINGS_FILE, section, key, getattr(args, flag))
        for flag, section, key in simple
        if getattr(args, flag)
    ]
    if args.aws_account:
        edits += [
            Edit(SETTINGS_FILE, "aws", "account_id", args.aws_account),
            Edit(SETTINGS_FILE, "aws", "allowed_account_ids", [args.aws_account]),
        ]
    if args.gcp_project:
        edits += [
            Edit(SETTINGS_FILE, "gcp", "project", args.gcp_project),
            Edit(SETTINGS_FILE, "gcp", "allowed_projects", [args.gcp_project]),
        ]
    if args.gcp_zones:
        edits.append(Edit(SETTINGS_FILE, "gcp", "zones", args.gcp_zones.split(",")))
    elif args.gcp_region:
        message = f"name {args.gcp_region}'s zones for replicas with --gcp-zones"
        raise SettingsError(ENVIRONMENTS_DIR / args.env / SETTINGS_FILE, "gcp.zones", message)
    edits += _state_bucket(args)
    for pin in args.image or []:
        service, sep, reference = pin.partition("=")
        if not sep or not service or not reference:
            message = f"--image {pin}: write SERVICE=REGISTRY/PATH:TAG@sha256:DIGEST"
            raise SettingsError(ENVIRONMENTS_DIR / args.env / PINS_FILE, "images", message)
        edits.append(Edit(PINS_FILE, "images", service, reference))
    return edits


def apply(environment: str, edits: Sequence[Edit], root: Path = ENVIRONMENTS_DIR) -> dict[str, str]:
    """The new text of each file the edits touch (nothing is written)."""
    texts: dict[str, str] = {}
    for edit in edits:
        path = root / environment / edit.file
        text = texts.get(edit.file, path.read_text(encoding="utf-8"))
        texts[edit.file] = set_key(text, edit.section, edit.key, edit.value)
    return texts


def init(
    environment: str, edits: Sequence[Edit], root: Path = ENVIRONMENTS_DIR, *, write: bool = True
) -> str:
    """Validate and write the edits; return the unified diff of what changed.

    Raises SettingsError (naming the file, as it is in ``root``, and the key) and writes nothing
    when the edited environment does not load."""
    validate_name(environment)
    if not (root / environment / SETTINGS_FILE).exists():
        raise SettingsError(root, None, f"unknown environment '{environment}'")
    texts = apply(environment, edits, root)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "environments"
        shutil.copytree(root, copy)
        for name, text in texts.items():
            (copy / environment / name).write_text(text, encoding="utf-8")
        try:
            load_environment(environment, root=copy)
        except SettingsError as exc:
            # Name the real file, not the scratch copy.
            failed = Path(exc.file)
            real = root / failed.relative_to(copy) if failed.is_relative_to(copy) else failed
            raise SettingsError(real, exc.key, exc.message) from None
    diff: list[str] = []
    for name, text in texts.items():
        before = (root / environment / name).read_text(encoding="utf-8").splitlines(keepends=True)
        after = text.splitlines(keepends=True)
        where = f"environments/{environment}/{name}"
        diff += difflib.unified_diff(before, after, f"a/{where}", f"b/{where}")
    if write:
        for name, text in texts.items():
            path = root / environment / name
            partial = path.with_suffix(".toml.partial")
            partial.write_text(text, encoding="utf-8")
            partial.replace(path)
    return "".join(diff)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("init", help="write an organisation's values into an environment")
    add = parser.add_argument
    add("--env", required=True, metavar="ENV", help="the environment to write (dev, staging, ...)")
    add("--repository", metavar="OWNER/NAME", help="the GitHub repository that deploys")
    add("--aws-account", metavar="ID", help="the AWS account (also the only allowed one)")
    add("--aws-region", metavar="REGION")
    add("--aws-domain", metavar="HOST", help="the API's host name on AWS")
    add("--hosted-zone-id", metavar="ZONE", help="the Route 53 public hosted zone of --aws-domain")
    add("--aws-state-bucket", metavar="BUCKET", help="S3 bucket of the AWS stacks' state")
    add("--gcp-project", metavar="PROJECT", help="the GCP project (also the only allowed one)")
    add("--gcp-region", metavar="REGION")
    add("--gcp-zones", metavar="ZONE,ZONE", help="zones of --gcp-region for read replicas")
    add("--gcp-domain", metavar="HOST", help="the API's host name on GCP")
    add("--dns-zone", metavar="ZONE", help="the Cloud DNS managed zone of --gcp-domain")
    add("--gcp-state-bucket", metavar="BUCKET", help="GCS bucket of the GCP stacks' state")
    add("--alarm-email", metavar="ADDRESS", help="where alarms are sent")
    add(
        "--image",
        action="append",
        metavar="SERVICE=REF",
        help="pin a service image by digest (repeatable)",
    )
    add("--dry-run", action="store_true", help="show the diff, write nothing")
    parser.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    edits = edits_from(args)
    if not edits:
        raise SettingsError(ENVIRONMENTS_DIR / args.env, None, "no values given: see --help")
    diff = init(args.env, edits, write=not args.dry_run)
    print(diff or "Nothing changed: the files already hold these values.")
    left = find_examples(args.env)
    if left:
        print(f"Example values still in {args.env} (a live run refuses them):")
        for example in left:
            print(f"  {example.error()}")
    else:
        print(f"{args.env} holds no example value: live runs may use it.")
    return 0
