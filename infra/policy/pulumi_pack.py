"""The same rules as pulumi-policy policies, for `pulumi preview --policy-pack infra/policy/pack`.

The environment is the stack's name (the URN's stack part), so one pack serves every stack;
exemptions from ``environments/<env>/settings.toml`` are honoured here as offline. Pulumi fixes a
policy's enforcement level when the pack starts, so per-environment levels travel in a
``--policy-pack-config`` file written by :func:`pack_config`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.plans.read.formats import Urn
from infra.policy.rules import RULES, Context, ResourceView, Rule
from infra.settings import Enforcement, EnvironmentSettings, SettingsError, environment

PACK_NAME = "billing-platform"


def stack_of(urn: str) -> str:
    """The stack name in ``urn:pulumi:<stack>::<project>::<type>::<name>``."""
    return Urn.parse(urn).stack


def _settings(urn: str) -> EnvironmentSettings | None:
    try:
        return environment(stack_of(urn))
    except SettingsError:
        # A stack that is no environment of this repository: rules run with default levels.
        return None


def _context(settings: EnvironmentSettings | None, urn: str) -> Context:
    return Context.of(settings) if settings is not None else Context(stack_of(urn))


def _exempt(settings: EnvironmentSettings | None, rule: Rule, urn: str, name: str | None) -> bool:
    if settings is None:
        return False
    today = dt.datetime.now(dt.UTC).date()
    return any(e.waives(rule.name, urn, name, today) for e in settings.policy.exemptions)


def _level(level: Enforcement) -> EnforcementLevel:
    return EnforcementLevel(level.value)


def _resource_policy(rule: Rule) -> ResourceValidationPolicy:
    check = rule.resource_check
    assert check is not None  # noqa: S101 - only called for resource rules

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in rule.types:
            return
        view = ResourceView(
            urn=args.urn,
            type=args.resource_type,
            name=args.name,
            inputs=args.props,
            protect=args.opts.protect,
        )
        settings = _settings(args.urn)
        for message in check(view, _context(settings, args.urn)):
            if not _exempt(settings, rule, args.urn, args.name):
                report_violation(message, None)

    return ResourceValidationPolicy(
        name=rule.name,
        description=f"{rule.description} ({', '.join(rule.controls)})",
        validate=validate,
        enforcement_level=_level(rule.enforcement),
    )


def _view(resource: PolicyResource) -> ResourceView:
    return ResourceView(
        urn=resource.urn,
        type=resource.resource_type,
        name=resource.name,
        inputs=resource.props,
        protect=resource.opts.protect,
        dependencies=tuple(d.urn for d in resource.dependencies),
        provider=f"{resource.provider.urn}::" if resource.provider is not None else "",
    )


def _stack_policy(rule: Rule) -> StackValidationPolicy:
    check = rule.stack_check
    assert check is not None  # noqa: S101 - only called for stack rules

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        if not args.resources:
            return
        resources = {r.urn: _view(r) for r in args.resources}
        # Providers carry the default tags and labels the tag rules merge in.
        for r in args.resources:
            provider = r.provider
            if provider is not None and provider.urn not in resources:
                resources[provider.urn] = ResourceView(
                    urn=provider.urn,
                    type=provider.resource_type,
                    name=provider.name,
                    inputs=provider.props,
                )
        urn = args.resources[0].urn
        settings = _settings(urn)
        for violation in check(list(resources.values()), _context(settings, urn)):
            view = resources.get(violation.urn)
            name = view.name if view is not None else None
            if not _exempt(settings, rule, violation.urn, name):
                report_violation(violation.message, violation.urn)

    return StackValidationPolicy(
        name=rule.name,
        description=f"{rule.description} ({', '.join(rule.controls)})",
        validate=validate,
        enforcement_level=_level(rule.enforcement),
    )


def policies() -> list[Policy]:
    """One pulumi-policy policy per rule."""
    return [
        _resource_policy(rule) if rule.resource_check is not None else _stack_policy(rule)
        for rule in RULES
    ]


def pack_config(settings: EnvironmentSettings) -> dict[str, Mapping[str, Any]]:
    """The `--policy-pack-config` JSON for an environment: each rule's enforcement level."""
    return {
        rule.name: {
            "enforcementLevel": settings.policy.enforcement.get(rule.name, rule.enforcement).value
        }
        for rule in RULES
    }
