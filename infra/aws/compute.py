"""AWS compute: ECR repositories, the ECS Fargate cluster, services, scaling and migrations.

Ports, health paths, environment variable names and secret names come from each service's
manifest (services/<name>/manifest.toml): one source for the service-infrastructure contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.firewall import POSTGRES_PORT, REDIS_PORT
from infra.aws.secrets import DATABASE_SECRET_KEY
from infra.manifests import SecretName, ServiceManifest, ValueSource
from infra.settings import EnvironmentSettings
from infra.tagging import tags

CPU_TARGET = 70.0
MEMORY_TARGET = 80.0
SCALE_OUT_COOLDOWN = 60
SCALE_IN_COOLDOWN = 300
PAYMENT_GATEWAY = "stripe"
MIGRATION = "migrate"
BLUE_GREEN_POLICY = "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"


def release_alarms(settings: EnvironmentSettings, service: str) -> list[str]:
    """The alarms whose firing rolls a release of a load-balanced ``service`` back: requests
    failing, or no task passing its health check (both in infra/aws/observability.py)."""
    prefix = f"billing-{settings.name}"
    return [f"{prefix}-alb-5xx-rate", f"{prefix}-{service}-no-healthy-targets"]


def _assume(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


@dataclass(frozen=True)
class Endpoints:
    """What the services connect to; the manifests' value sources resolve against it."""

    database_host: str
    database_read_host: str
    database_name: str
    database_username: str
    cache_host: str
    secret_arns: Mapping[SecretName, str]


def plain_value(
    source: ValueSource,
    manifest: ServiceManifest,
    settings: EnvironmentSettings,
    endpoints: Endpoints,
) -> str:
    """The plain environment value a manifest's source names."""
    values = {
        ValueSource.ENVIRONMENT: settings.name,
        ValueSource.SERVICE_PORT: str(manifest.port or ""),
        ValueSource.DATABASE_HOST: endpoints.database_host,
        ValueSource.DATABASE_READ_HOST: endpoints.database_read_host,
        ValueSource.DATABASE_PORT: str(POSTGRES_PORT),
        ValueSource.DATABASE_NAME: endpoints.database_name,
        ValueSource.DATABASE_USERNAME: endpoints.database_username,
        ValueSource.CACHE_HOST: endpoints.cache_host,
        ValueSource.CACHE_PORT: str(REDIS_PORT),
        # Transit encryption is always on: clients must speak TLS.
        ValueSource.CACHE_TLS: "true",
        # ElastiCache presents certificates of Amazon's public CAs: the system store trusts them.
        ValueSource.CACHE_CA_FILE: "",
        ValueSource.PAYMENT_GATEWAY: PAYMENT_GATEWAY,
        ValueSource.API_RATE_LIMIT: str(settings.api.rate_limit_per_minute),
    }
    return values[source]


def secret_reference(name: SecretName, arns: Mapping[SecretName, str]) -> str:
    """The valueFrom of a secret: its ARN, with the JSON key for the database credentials."""
    if name is SecretName.DATABASE_PASSWORD:
        return f"{arns[name]}:{DATABASE_SECRET_KEY}::"
    return arns[name]


def container_definitions(
    *,
    manifest: ServiceManifest,
    settings: EnvironmentSettings,
    endpoints: Endpoints,
    image: str,
    command: list[str],
    log_group: str,
    stream_prefix: str,
    serve: bool,
) -> str:
    """The task's one container, from the manifest: port, health check, environment, secrets."""
    assert settings.aws is not None  # noqa: S101 - AWS components run only for AWS stacks
    container: dict[str, Any] = {
        "name": manifest.name,
        "image": image,
        "essential": True,
        "command": command,
        # A variable whose value is empty is left out: Fargate drops empty variables
        # (aws/amazon-ecs-agent#2550), so declaring one would only show as a diff.
        "environment": [
            {"name": key, "value": value}
            for key, source in sorted(manifest.environment.items())
            if (value := plain_value(source, manifest, settings, endpoints)) != ""
        ],
        # Secrets reach the container from Secrets Manager at start, never as plain values.
        "secrets": [
            {"name": key, "valueFrom": secret_reference(secret, endpoints.secret_arns)}
            for key, secret in sorted(manifest.secrets.items())
        ],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": settings.aws.region,
                "awslogs-stream-prefix": stream_prefix,
            },
        },
        "readonlyRootFilesystem": False,
        "stopTimeout": 30,
    }
    if serve and manifest.port is not None:
        container["portMappings"] = [{"containerPort": manifest.port, "protocol": "tcp"}]
    if serve and manifest.port is not None and manifest.health_path is not None:
        # The image is Python; urllib avoids depending on curl being installed.
        probe = (
            "import sys, urllib.request; "
            f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{manifest.port}"
            f"{manifest.health_path}', timeout=4).status != 200)"
        )
        container["healthCheck"] = {
            "command": ["CMD", "python", "-c", probe],
            "interval": 30,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 30,
        }
    return json.dumps([container])


@dataclass(frozen=True)
class ComputeArgs:
    settings: EnvironmentSettings
    services: dict[str, ServiceManifest]
    subnet_ids: pulumi.Input[list[str]]
    security_group_ids: dict[str, pulumi.Output[str]]
    target_group_arns: dict[str, pulumi.Output[str]]
    # The listener that attaches the target groups to the ALB; services wait for it.
    listener: pulumi.Resource
    # The VPC whose private DNS names internal services (Cloud Map).
    vpc_id: pulumi.Input[str]
    # Path rules that attach routed services' target groups; each service waits for its own.
    listener_rules: dict[str, pulumi.Resource]
    listener_rule_arns: dict[str, pulumi.Output[str]]
    # Blue/green: each load-balanced service's second target group.
    alternate_target_group_arns: dict[str, pulumi.Output[str]]
    secret_arns: dict[SecretName, pulumi.Output[str]]
    data_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    database_host: pulumi.Input[str]
    database_read_host: pulumi.Input[str]
    database_name: str
    database_username: str
    cache_host: pulumi.Input[str]
    # Each service's image in the environment's pull-through cache, pinned by digest.
    images: dict[str, str]
    # The cache's repository prefix: the execution role may create repositories under it.
    repository_prefix: str
    # The pull-through cache rule: a task's first pull needs it.
    registry: pulumi.Resource


@dataclass(frozen=True)
class _Task:
    """What a task definition of one service's image needs."""

    manifest: ServiceManifest
    image: str
    cpu: int
    memory: int
    execution_role_arn: pulumi.Output[str]
    task_role_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]


class Compute(pulumi.ComponentResource):
    """Fargate tasks for every service, scaled on CPU and memory, plus the migration task."""

    cluster_name: pulumi.Output[str]
    cluster_arn: pulumi.Output[str]
    service_names: dict[str, pulumi.Output[str]]
    migration_task_definition_arn: pulumi.Output[str]
    log_group_names: dict[str, pulumi.Output[str]]
    internal_names: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: ComputeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Compute", name, None, opts)
        self._name = name
        self._args = args
        self._namespace: aws.servicediscovery.PrivateDnsNamespace | None = None
        self._lb_role: aws.iam.Role | None = None
        self.internal_names: dict[str, pulumi.Output[str]] = {}
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"billing-{settings.name}"

        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            aws.ecs.ClusterArgs(
                name=prefix,
                settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
                tags=tags(settings),
            ),
            opts=child,
        )
        aws.ecs.ClusterCapacityProviders(
            f"{name}-capacity",
            aws.ecs.ClusterCapacityProvidersArgs(
                cluster_name=cluster.name,
                capacity_providers=["FARGATE"],
                default_capacity_provider_strategies=[
                    aws.ecs.ClusterCapacityProvidersDefaultCapacityProviderStrategyArgs(
                        capacity_provider="FARGATE", weight=1, base=0
                    )
                ],
            ),
            opts=child,
        )

        self.service_names = {}
        self.log_group_names = {}
        migration_task: _Task | None = None
        for service, manifest in sorted(args.services.items()):
            task = self._roles_and_logs(service, manifest)
            self.log_group_names[service] = task.log_group_name
            definition = self._task_definition(
                service, f"{prefix}-{service}", task, manifest.command, serve=True
            )
            self.service_names[service] = self._service(service, manifest, cluster, definition).name
            if manifest.migrations is not None:
                migration_task = task

        if migration_task is None or migration_task.manifest.migrations is None:
            raise ValueError("no service manifest names [migrations]")
        # The one-off task a release runs before the new services (Alembic upgrade head).
        migration = self._task_definition(
            MIGRATION,
            f"{prefix}-{MIGRATION}",
            migration_task,
            migration_task.manifest.migrations.command,
            serve=False,
        )

        self.cluster_name = cluster.name
        self.cluster_arn = cluster.arn
        self.migration_task_definition_arn = migration.arn
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "cluster_arn": self.cluster_arn,
                "service_names": self.service_names,
                "migration_task_definition_arn": self.migration_task_definition_arn,
                "log_group_names": self.log_group_names,
                "internal_names": self.internal_names,
            }
        )

    def _roles_and_logs(self, service: str, manifest: ServiceManifest) -> _Task:
        """The service's log group, execution role (its secrets only) and empty task role."""
        name, args = self._name, self._args
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-{service}-logs",
            aws.cloudwatch.LogGroupArgs(
                name=f"/ecs/billing-{settings.name}/{service}",
                retention_in_days=settings.logs.retention_days,
                kms_key_id=args.logs_key_arn,
                tags=tags(settings, service),
            ),
            # protect: the service's record of what it did to customers' money.
            opts=pulumi.ResourceOptions(parent=self, protect=settings.is_production),
        )
        execution_role = aws.iam.Role(
            f"{name}-{service}-execution-role",
            aws.iam.RoleArgs(
                description=f"ECS agent for {service}: pull, log, read its secrets",
                assume_role_policy=_assume("ecs-tasks.amazonaws.com"),
                tags=tags(settings, service),
            ),
            opts=child,
        )
        own_secrets = [args.secret_arns[s] for s in manifest.secret_names]
        aws.iam.RolePolicy(
            f"{name}-{service}-execution-policy",
            aws.iam.RolePolicyArgs(
                role=execution_role.id,
                policy=pulumi.Output.all(log_group.arn, args.data_key_arn, *own_secrets).apply(
                    lambda values: execution_policy(
                        values[0], values[1], values[2:], self._cached_repositories()
                    )
                ),
            ),
            opts=child,
        )
        # The application calls no AWS API: its task role grants nothing.
        task_role = aws.iam.Role(
            f"{name}-{service}-task-role",
            aws.iam.RoleArgs(
                description=f"{service} application: no AWS permissions",
                assume_role_policy=_assume("ecs-tasks.amazonaws.com"),
                tags=tags(settings, service),
            ),
            opts=child,
        )
        scaling = settings.services[service]
        return _Task(
            manifest=manifest,
            image=args.images[service],
            cpu=scaling.cpu or manifest.cpu,
            memory=scaling.memory or manifest.memory,
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            log_group_name=log_group.name,
        )

    def _cached_repositories(self) -> str:
        settings = self._args.settings
        assert settings.aws is not None  # noqa: S101 - AWS components run only for AWS stacks
        region, account = settings.aws.region, settings.aws.account_id
        return f"arn:aws:ecr:{region}:{account}:repository/{self._args.repository_prefix}/*"

    def _task_definition(
        self, role: str, family: str, task: _Task, command: list[str], *, serve: bool
    ) -> aws.ecs.TaskDefinition:
        args = self._args
        settings = args.settings

        def definitions(values: list[Any]) -> str:
            database_host, read_host, cache_host, log_group_name, *arns = values
            endpoints = Endpoints(
                database_host=database_host,
                database_read_host=read_host,
                database_name=args.database_name,
                database_username=args.database_username,
                cache_host=cache_host,
                secret_arns=dict(zip(list(SecretName), arns, strict=True)),
            )
            return container_definitions(
                manifest=task.manifest,
                settings=settings,
                endpoints=endpoints,
                image=task.image,
                command=command,
                log_group=log_group_name,
                stream_prefix=role,
                serve=serve,
            )

        resolved = pulumi.Output.all(
            args.database_host,
            args.database_read_host,
            args.cache_host,
            task.log_group_name,
            *[args.secret_arns[s] for s in SecretName],
        )
        return aws.ecs.TaskDefinition(
            f"{self._name}-{role}-task",
            aws.ecs.TaskDefinitionArgs(
                family=family,
                requires_compatibilities=["FARGATE"],
                network_mode="awsvpc",
                cpu=str(task.cpu),
                memory=str(task.memory),
                runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                    operating_system_family="LINUX", cpu_architecture="X86_64"
                ),
                execution_role_arn=task.execution_role_arn,
                task_role_arn=task.task_role_arn,
                container_definitions=resolved.apply(definitions),
                tags=tags(settings, task.manifest.name),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _load_balancer_role(self) -> aws.iam.Role:
        """The role ECS assumes to move listener rules and target groups in a blue/green release."""
        if self._lb_role is None:
            settings = self._args.settings
            self._lb_role = aws.iam.Role(
                f"{self._name}-blue-green-role",
                aws.iam.RoleArgs(
                    description="ECS shifts load balancer traffic in blue/green releases",
                    assume_role_policy=_assume("ecs.amazonaws.com"),
                    # AWS's managed policy for this role (ECS developer guide, "Amazon ECS
                    # infrastructure IAM role for load balancers"; awslabs/mcp#1354).
                    managed_policy_arns=[BLUE_GREEN_POLICY],
                    tags=tags(settings),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        return self._lb_role

    def _discovery(
        self, service: str, manifest: ServiceManifest
    ) -> aws.ecs.ServiceServiceRegistriesArgs | None:
        """An internal service's name in the environment's private namespace (Cloud Map)."""
        if not manifest.internal:
            return None
        settings = self._args.settings
        if self._namespace is None:
            # One private DNS namespace per environment: <service>.billing-<env>.internal.
            self._namespace = aws.servicediscovery.PrivateDnsNamespace(
                f"{self._name}-discovery",
                aws.servicediscovery.PrivateDnsNamespaceArgs(
                    name=f"billing-{settings.name}.internal",
                    description="Internal services by name",
                    vpc=self._args.vpc_id,
                    tags=tags(settings),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        entry = aws.servicediscovery.Service(
            f"{self._name}-{service}-discovery",
            aws.servicediscovery.ServiceArgs(
                name=service,
                description=f"{service}'s tasks (A records, one per healthy task)",
                dns_config=aws.servicediscovery.ServiceDnsConfigArgs(
                    namespace_id=self._namespace.id,
                    routing_policy="MULTIVALUE",
                    dns_records=[
                        aws.servicediscovery.ServiceDnsConfigDnsRecordArgs(ttl=10, type="A")
                    ],
                ),
                # ECS reports task health to Cloud Map (custom health checks).
                health_check_custom_config=aws.servicediscovery.ServiceHealthCheckCustomConfigArgs(),
                tags=tags(settings, service),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.internal_names[service] = pulumi.Output.concat(
            service, ".billing-", settings.name, ".internal"
        )
        return aws.ecs.ServiceServiceRegistriesArgs(registry_arn=entry.arn)

    def _service(
        self,
        service: str,
        manifest: ServiceManifest,
        cluster: aws.ecs.Cluster,
        definition: aws.ecs.TaskDefinition,
    ) -> aws.ecs.Service:
        """The long-running service and its CPU and memory target tracking."""
        name, args = self._name, self._args
        settings = args.settings
        scaling = settings.services[service]
        target_group = args.target_group_arns.get(service)
        rule = [args.listener_rules[service]] if service in args.listener_rules else []
        registries = self._discovery(service, manifest)
        release = settings.release
        alternate = args.alternate_target_group_arns.get(service)
        blue_green = release.blue_green and alternate is not None
        load_balancers = (
            [
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=target_group,
                    container_name=manifest.name,
                    container_port=manifest.port,
                    # ECS native blue/green: the alternate group takes the new tasks, ECS shifts
                    # the production rule to it, with this role (pulumi-aws ecs.Service
                    # load_balancers[].advanced_configuration; AWS ECS developer guide,
                    # "Required resources for Amazon ECS blue/green deployments").
                    advanced_configuration=aws.ecs.ServiceLoadBalancerAdvancedConfigurationArgs(
                        alternate_target_group_arn=alternate,
                        production_listener_rule=args.listener_rule_arns[service],
                        role_arn=self._load_balancer_role().arn,
                    )
                    if blue_green and alternate is not None
                    else None,
                )
            ]
            if target_group is not None and manifest.port is not None
            else None
        )
        ecs_service = aws.ecs.Service(
            f"{name}-{service}-service",
            aws.ecs.ServiceArgs(
                name=service,
                cluster=cluster.arn,
                task_definition=definition.arn,
                desired_count=scaling.min_tasks,
                launch_type="FARGATE",
                platform_version="LATEST",
                network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                    subnets=args.subnet_ids,
                    security_groups=[args.security_group_ids[service]],
                    assign_public_ip=False,
                ),
                load_balancers=load_balancers,
                service_registries=registries,
                health_check_grace_period_seconds=60 if load_balancers else None,
                deployment_minimum_healthy_percent=100,
                deployment_maximum_percent=200,
                # A release that never turns healthy rolls itself back.
                deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                    enable=True, rollback=True
                ),
                # Blue/green: traffic moves to the new tasks at once, the old ones stay for the
                # bake time; rolling (dev, staging) replaces tasks one by one.
                deployment_configuration=aws.ecs.ServiceDeploymentConfigurationArgs(
                    strategy="BLUE_GREEN", bake_time_in_minutes=str(release.bake_minutes)
                )
                if blue_green
                else None,
                # An alarm that fires during the release (or its bake time) rolls it back
                # (ECS deployment alarms; the worker relies on the circuit breaker).
                alarms=aws.ecs.ServiceAlarmsArgs(
                    alarm_names=release_alarms(settings, service), enable=True, rollback=True
                )
                if blue_green
                else None,
                propagate_tags="SERVICE",
                enable_ecs_managed_tags=True,
                # `up` waits until the tasks run and pass their health checks, and fails when
                # they cannot start (an image it cannot pull, a secret it cannot read) instead
                # of reporting success over a service that never serves.
                wait_for_steady_state=True,
                tags=tags(settings, service),
            ),
            # desiredCount belongs to the auto-scaler once the service exists; a target group
            # takes traffic only once the listener attaches it to the load balancer.
            opts=pulumi.ResourceOptions(
                parent=self,
                ignore_changes=["desiredCount"],
                depends_on=[args.registry, *([args.listener, *rule] if load_balancers else [])],
            ),
        )
        target = aws.appautoscaling.Target(
            f"{name}-{service}-scaling",
            aws.appautoscaling.TargetArgs(
                service_namespace="ecs",
                scalable_dimension="ecs:service:DesiredCount",
                resource_id=pulumi.Output.concat("service/", cluster.name, "/", ecs_service.name),
                min_capacity=scaling.min_tasks,
                max_capacity=scaling.max_tasks,
                tags=tags(settings, service),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        tracking = aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs
        predefined = aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs  # noqa: E501
        for metric, value in (("CPU", CPU_TARGET), ("Memory", MEMORY_TARGET)):
            aws.appautoscaling.Policy(
                f"{name}-{service}-{metric.lower()}-scaling",
                aws.appautoscaling.PolicyArgs(
                    name=f"billing-{settings.name}-{service}-{metric.lower()}",
                    policy_type="TargetTrackingScaling",
                    service_namespace=target.service_namespace,
                    scalable_dimension=target.scalable_dimension,
                    resource_id=target.resource_id,
                    target_tracking_scaling_policy_configuration=tracking(
                        target_value=value,
                        predefined_metric_specification=predefined(
                            predefined_metric_type=f"ECSServiceAverage{metric}Utilization"
                        ),
                        scale_out_cooldown=SCALE_OUT_COOLDOWN,
                        scale_in_cooldown=SCALE_IN_COOLDOWN,
                    ),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        return ecs_service


def execution_policy(
    log_group_arn: str, key_arn: str, secret_arns: list[str], cached_repositories: str
) -> str:
    """The ECS agent's policy: pull images, write one log group, read the service's secrets."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PullImages",
                    "Effect": "Allow",
                    "Action": [
                        "ecr:GetAuthorizationToken",
                        "ecr:BatchCheckLayerAvailability",
                        "ecr:GetDownloadUrlForLayer",
                        "ecr:BatchGetImage",
                    ],
                    "Resource": "*",
                },
                {
                    # A first pull through the cache creates the repository and imports the
                    # image: https://docs.aws.amazon.com/AmazonECR/latest/userguide/pull-through-cache-iam.html
                    "Sid": "FillTheCache",
                    "Effect": "Allow",
                    "Action": ["ecr:CreateRepository", "ecr:BatchImportUpstreamImage"],
                    "Resource": cached_repositories,
                },
                {
                    "Sid": "WriteLogs",
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                    "Resource": f"{log_group_arn}:*",
                },
                {
                    "Sid": "ReadOwnSecrets",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": sorted(secret_arns),
                },
                {
                    "Sid": "DecryptOwnSecrets",
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": key_arn,
                },
            ],
        }
    )
