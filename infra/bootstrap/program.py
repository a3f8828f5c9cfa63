"""The bootstrap programs, one per cloud, and their offline render (like the platform stacks).

They run once per environment, by a person with administrator credentials, before CI can
deploy; everything after that goes through the roles they create.
"""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp
import pulumi_github as github
from pulumi.runtime import mocks, settings, stack
from pulumi.runtime.sync_await import _sync_await

from infra.bootstrap.aws import AwsBootstrap, AwsBootstrapArgs
from infra.bootstrap.gcp import GcpBootstrap, GcpBootstrapArgs
from infra.bootstrap.github import preview_environment
from infra.bootstrap.repository import GithubEnvironments, GithubEnvironmentsArgs, team_ids
from infra.plans.produce.mocks import RecordingMonitor
from infra.plans.produce.offline import RenderError, target_of
from infra.plans.read.model import Plan
from infra.settings import Cloud, EnvironmentSettings, environment
from infra.tagging import labels, tags

PROJECTS = {Cloud.AWS: "billing-bootstrap-aws", Cloud.GCP: "billing-bootstrap-gcp"}


def github_side(
    env: EnvironmentSettings, cloud: Cloud, variables: dict[str, dict[str, pulumi.Input[str]]]
) -> GithubEnvironments:
    """The GitHub environments: the first cloud's bootstrap owns them; each sets its identifiers."""
    owner = env.repository.split("/", 1)[0]
    provider = github.Provider("github", github.ProviderArgs(owner=owner))
    owns = cloud == env.clouds[0]
    teams = team_ids(env, pulumi.InvokeOutputOptions(provider=provider)) if owns else []
    return GithubEnvironments(
        "github",
        GithubEnvironmentsArgs(
            settings=env, variables=variables, manage_environments=owns, reviewer_team_ids=teams
        ),
        opts=pulumi.ResourceOptions(providers=[provider]),
    )


def aws_main() -> None:
    """Declare the AWS bootstrap of the environment named by the stack."""
    env = environment(pulumi.get_stack())
    assert env.aws is not None  # noqa: S101 - the stack exists only where clouds lists aws
    provider = aws.Provider(
        "aws",
        aws.ProviderArgs(
            region=env.aws.region,
            allowed_account_ids=env.aws.allowed_account_ids,
            default_tags=aws.ProviderDefaultTagsArgs(tags=tags(env)),
        ),
    )
    bootstrap = AwsBootstrap(
        "bootstrap",
        AwsBootstrapArgs(settings=env),
        opts=pulumi.ResourceOptions(providers=[provider]),
    )
    preview, deploy = preview_environment(env.name), env.name
    github_side(
        env,
        Cloud.AWS,
        {
            preview: {
                "AWS_REGION": env.aws.region,
                "AWS_PREVIEW_ROLE_ARN": bootstrap.preview_role_arn,
            },
            deploy: {
                "AWS_REGION": env.aws.region,
                "AWS_DEPLOY_ROLE_ARN": bootstrap.deploy_role_arn,
            },
        },
    )
    pulumi.export("state_bucket", bootstrap.state_bucket)
    pulumi.export("preview_role_arn", bootstrap.preview_role_arn)
    pulumi.export("deploy_role_arn", bootstrap.deploy_role_arn)


def gcp_main() -> None:
    """Declare the GCP bootstrap of the environment named by the stack."""
    env = environment(pulumi.get_stack())
    assert env.gcp is not None  # noqa: S101 - the stack exists only where clouds lists gcp
    provider = gcp.Provider(
        "gcp",
        gcp.ProviderArgs(
            project=env.gcp.project,
            region=env.gcp.region,
            default_labels=labels(env),
        ),
    )
    bootstrap = GcpBootstrap(
        "bootstrap",
        GcpBootstrapArgs(settings=env),
        opts=pulumi.ResourceOptions(providers=[provider]),
    )
    preview, deploy = preview_environment(env.name), env.name
    provider_name = bootstrap.provider_name
    github_side(
        env,
        Cloud.GCP,
        {
            preview: {
                "GCP_WORKLOAD_IDENTITY_PROVIDER": provider_name,
                "GCP_PREVIEW_SERVICE_ACCOUNT": bootstrap.preview_service_account,
            },
            deploy: {
                "GCP_WORKLOAD_IDENTITY_PROVIDER": provider_name,
                "GCP_DEPLOY_SERVICE_ACCOUNT": bootstrap.deploy_service_account,
            },
        },
    )
    pulumi.export("workload_identity_provider", bootstrap.provider_name)
    pulumi.export("preview_service_account", bootstrap.preview_service_account)
    pulumi.export("deploy_service_account", bootstrap.deploy_service_account)


PROGRAMS: dict[Cloud, Callable[[], None]] = {Cloud.AWS: aws_main, Cloud.GCP: gcp_main}


def render(env: EnvironmentSettings, cloud: Cloud) -> Plan:
    """Render one environment's bootstrap offline, as plans.produce.offline renders the stacks."""
    monitor = RecordingMonitor(target_of(env, cloud))
    project = PROJECTS[cloud]
    settings.ROOT.set(None)
    mocks.set_mocks(
        monitor.offline_mocks, project=project, stack=env.name, preview=True, monitor=monitor
    )
    try:
        _sync_await(stack.run_pulumi_func(PROGRAMS[cloud]))
    except Exception as exc:
        raise RenderError(f"bootstrap {env.name}-{cloud.value}: {exc}") from exc
    finally:
        settings.ROOT.set(None)
    resources = sorted(monitor.recorded, key=lambda r: r.urn)
    return Plan(
        environment=env.name,
        cloud=cloud.value,
        stack=f"{project}/{env.name}",
        mode="offline",
        resources=resources,
    )
