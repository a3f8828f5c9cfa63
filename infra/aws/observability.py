"""AWS observability: SNS topics by severity, CloudWatch alarms and the dashboard."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import EnvironmentSettings
from infra.tagging import tags

PERIOD = 300
# Thresholds from seed 001's alert list; where seed 002 is looser (90% CPU and memory, 2 s
# response time) the earlier warning wins.
RESPONSE_TIME_P95_SECONDS = 1.0
ERROR_RATE_PERCENT = 1.0
CPU_PERCENT = 80.0
MEMORY_PERCENT = 80.0
FREE_STORAGE_FRACTION = 0.1  # "storage > 90% full"
DATABASE_CONNECTIONS = 150  # seed 002
# A replica further behind than this serves reads older than the RPO (5 minutes) allows for.
REPLICA_LAG_SECONDS = 60
REDIS_EVICTIONS = 100
GIB = 1024**3


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class ObservabilityArgs:
    settings: EnvironmentSettings
    logs_key_arn: pulumi.Input[str]
    alb_arn_suffix: pulumi.Input[str]
    target_group_arn_suffixes: dict[str, pulumi.Output[str]]
    database_identifier: pulumi.Input[str]
    replica_identifiers: list[pulumi.Output[str]]
    cache_member_ids: list[str]
    cluster_name: pulumi.Input[str]
    service_names: dict[str, pulumi.Output[str]]


class Observability(pulumi.ComponentResource):
    """Alarms that page (critical), warn, or inform; and one dashboard per environment."""

    topic_arns: dict[str, pulumi.Output[str]]
    dashboard_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Observability", name, None, opts)
        settings = args.settings
        assert settings.aws is not None  # noqa: S101 - AWS components run only for AWS stacks
        region = settings.aws.region
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"billing-{settings.name}"

        topics: dict[Severity, aws.sns.Topic] = {}
        for severity in Severity:
            topics[severity] = aws.sns.Topic(
                f"{name}-{severity.value}",
                aws.sns.TopicArgs(
                    name=f"{prefix}-{severity.value}",
                    kms_master_key_id=args.logs_key_arn,
                    tags=tags(settings),
                ),
                opts=child,
            )
            if severity is not Severity.INFO:
                aws.sns.TopicSubscription(
                    f"{name}-{severity.value}-email",
                    aws.sns.TopicSubscriptionArgs(
                        topic=topics[severity].arn, protocol="email", endpoint=settings.alarms.email
                    ),
                    opts=child,
                )

        def alarm(
            role: str,
            severity: Severity,
            description: str,
            *,
            comparison: str,
            threshold: float,
            service: str = "platform",
            **metric: Any,
        ) -> None:
            aws.cloudwatch.MetricAlarm(
                f"{name}-{role}",
                aws.cloudwatch.MetricAlarmArgs(
                    name=f"{prefix}-{role}",
                    alarm_description=f"[{severity.value}] {description}",
                    comparison_operator=comparison,
                    threshold=threshold,
                    evaluation_periods=metric.pop("evaluation_periods", 1),
                    treat_missing_data=metric.pop("treat_missing_data", "notBreaching"),
                    alarm_actions=[topics[severity].arn],
                    ok_actions=[topics[severity].arn],
                    tags=tags(settings, service, severity=severity.value),
                    **metric,
                ),
                opts=child,
            )

        alb = {"LoadBalancer": args.alb_arn_suffix}
        alarm(
            "alb-response-time",
            Severity.WARNING,
            "API p95 response time above 1 s",
            comparison="GreaterThanThreshold",
            threshold=RESPONSE_TIME_P95_SECONDS,
            namespace="AWS/ApplicationELB",
            metric_name="TargetResponseTime",
            extended_statistic="p95",
            period=PERIOD,
            dimensions=alb,
        )

        def alb_metric(
            query_id: str, metric_name: str
        ) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=query_id,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace="AWS/ApplicationELB",
                    metric_name=metric_name,
                    period=PERIOD,
                    stat="Sum",
                    dimensions=alb,
                ),
            )

        alarm(
            "alb-5xx-rate",
            Severity.CRITICAL,
            "More than 1% of requests answered 5xx",
            comparison="GreaterThanThreshold",
            threshold=ERROR_RATE_PERCENT,
            metric_queries=[
                alb_metric("target", "HTTPCode_Target_5XX_Count"),
                alb_metric("elb", "HTTPCode_ELB_5XX_Count"),
                alb_metric("requests", "RequestCount"),
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id="rate",
                    label="5xx %",
                    return_data=True,
                    expression="100 * (FILL(target, 0) + FILL(elb, 0)) / requests",
                ),
            ],
        )
        for service, suffix in sorted(args.target_group_arn_suffixes.items()):
            alarm(
                f"{service}-no-healthy-targets",
                Severity.CRITICAL,
                f"Every {service} task fails its health check",
                comparison="LessThanThreshold",
                threshold=1,
                service=service,
                namespace="AWS/ApplicationELB",
                metric_name="HealthyHostCount",
                statistic="Minimum",
                period=60,
                evaluation_periods=3,
                treat_missing_data="breaching",
                dimensions={"LoadBalancer": args.alb_arn_suffix, "TargetGroup": suffix},
            )

        rds = {"DBInstanceIdentifier": args.database_identifier}
        alarm(
            "rds-cpu",
            Severity.WARNING,
            "Database CPU above 80% for 5 minutes",
            comparison="GreaterThanThreshold",
            threshold=CPU_PERCENT,
            namespace="AWS/RDS",
            metric_name="CPUUtilization",
            statistic="Average",
            period=PERIOD,
            dimensions=rds,
        )
        free_bytes = settings.database.allocated_storage_gb * GIB * FREE_STORAGE_FRACTION
        alarm(
            "rds-free-storage",
            Severity.CRITICAL,
            "Database storage more than 90% full",
            comparison="LessThanThreshold",
            threshold=free_bytes,
            namespace="AWS/RDS",
            metric_name="FreeStorageSpace",
            statistic="Minimum",
            period=PERIOD,
            dimensions=rds,
        )
        alarm(
            "rds-connections",
            Severity.WARNING,
            "More than 150 database connections",
            comparison="GreaterThanThreshold",
            threshold=DATABASE_CONNECTIONS,
            namespace="AWS/RDS",
            metric_name="DatabaseConnections",
            statistic="Maximum",
            period=PERIOD,
            dimensions=rds,
        )
        for index, replica in enumerate(args.replica_identifiers, start=1):
            # Each replica has its own alarms: a lagging replica serves stale reads.
            dimensions = {"DBInstanceIdentifier": replica}
            alarm(
                f"rds-replica-{index}-lag",
                Severity.WARNING,
                f"Read replica {index} more than {REPLICA_LAG_SECONDS} s behind",
                comparison="GreaterThanThreshold",
                threshold=REPLICA_LAG_SECONDS,
                namespace="AWS/RDS",
                metric_name="ReplicaLag",
                statistic="Maximum",
                period=60,
                evaluation_periods=5,
                dimensions=dimensions,
            )
            alarm(
                f"rds-replica-{index}-cpu",
                Severity.WARNING,
                f"Read replica {index} CPU above 80% for 5 minutes",
                comparison="GreaterThanThreshold",
                threshold=CPU_PERCENT,
                namespace="AWS/RDS",
                metric_name="CPUUtilization",
                statistic="Average",
                period=PERIOD,
                dimensions=dimensions,
            )
        for node in args.cache_member_ids:
            redis = {"CacheClusterId": node}
            alarm(
                f"redis-cpu-{node}",
                Severity.WARNING,
                f"Redis {node} engine CPU above 80%",
                comparison="GreaterThanThreshold",
                threshold=CPU_PERCENT,
                namespace="AWS/ElastiCache",
                metric_name="EngineCPUUtilization",
                statistic="Average",
                period=PERIOD,
                dimensions=redis,
            )
            alarm(
                f"redis-evictions-{node}",
                Severity.WARNING,
                f"Redis {node} is evicting keys",
                comparison="GreaterThanThreshold",
                threshold=REDIS_EVICTIONS,
                namespace="AWS/ElastiCache",
                metric_name="Evictions",
                statistic="Sum",
                period=PERIOD,
                dimensions=redis,
            )
        for service, service_name in sorted(args.service_names.items()):
            ecs = {"ClusterName": args.cluster_name, "ServiceName": service_name}
            for metric, threshold in (("CPU", CPU_PERCENT), ("Memory", MEMORY_PERCENT)):
                alarm(
                    f"{service}-{metric.lower()}",
                    Severity.WARNING,
                    f"{service} {metric.lower()} above {threshold:.0f}% for 5 minutes",
                    comparison="GreaterThanThreshold",
                    threshold=threshold,
                    service=service,
                    namespace="AWS/ECS",
                    metric_name=f"{metric}Utilization",
                    statistic="Average",
                    period=PERIOD,
                    dimensions=ecs,
                )

        # Info: deployments finishing or failing, as seed 001's info notifications ask.
        deployments = aws.cloudwatch.EventRule(
            f"{name}-deployments",
            aws.cloudwatch.EventRuleArgs(
                name=f"{prefix}-deployments",
                description="ECS deployment state changes in this environment's cluster",
                event_pattern=pulumi.Output.from_input(args.cluster_name).apply(
                    lambda cluster: json.dumps(
                        {
                            "source": ["aws.ecs"],
                            "detail-type": ["ECS Deployment State Change"],
                            "resources": [
                                {"wildcard": f"arn:aws:ecs:{region}:*:service/{cluster}/*"}
                            ],
                        }
                    )
                ),
                tags=tags(settings),
            ),
            opts=child,
        )
        aws.sns.TopicPolicy(
            f"{name}-info-policy",
            aws.sns.TopicPolicyArgs(
                arn=topics[Severity.INFO].arn,
                policy=topics[Severity.INFO].arn.apply(
                    lambda arn: json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Sid": "EventBridgePublishes",
                                    "Effect": "Allow",
                                    "Principal": {"Service": "events.amazonaws.com"},
                                    "Action": "sns:Publish",
                                    "Resource": arn,
                                }
                            ],
                        }
                    )
                ),
            ),
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-deployments-info",
            aws.cloudwatch.EventTargetArgs(rule=deployments.name, arn=topics[Severity.INFO].arn),
            opts=child,
        )

        dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            aws.cloudwatch.DashboardArgs(
                dashboard_name=prefix,
                dashboard_body=pulumi.Output.all(
                    args.alb_arn_suffix,
                    args.database_identifier,
                    args.cluster_name,
                    *[args.service_names[s] for s in sorted(args.service_names)],
                ).apply(
                    lambda values: dashboard_body(
                        region, values[0], values[1], values[2], values[3:], args.cache_member_ids
                    )
                ),
            ),
            opts=child,
        )

        self.topic_arns = {severity.value: topic.arn for severity, topic in topics.items()}
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs(
            {"topic_arns": self.topic_arns, "dashboard_name": self.dashboard_name}
        )


def dashboard_body(
    region: str, alb: str, database: str, cluster: str, services: list[str], cache_nodes: list[str]
) -> str:
    """One row per layer: edge, services, database, cache."""

    def widget(title: str, metrics: list[list[Any]], y: int, x: int) -> dict[str, Any]:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 12,
            "height": 6,
            "properties": {
                "title": title,
                "region": region,
                "metrics": metrics,
                "period": PERIOD,
                "view": "timeSeries",
                "stat": "Average",
            },
        }

    elb = "AWS/ApplicationELB"
    widgets = [
        widget(
            "ALB requests and 5xx",
            [
                [elb, "RequestCount", "LoadBalancer", alb, {"stat": "Sum"}],
                [elb, "HTTPCode_Target_5XX_Count", "LoadBalancer", alb, {"stat": "Sum"}],
                [elb, "HTTPCode_ELB_5XX_Count", "LoadBalancer", alb, {"stat": "Sum"}],
            ],
            0,
            0,
        ),
        widget(
            "ALB p95 response time",
            [[elb, "TargetResponseTime", "LoadBalancer", alb, {"stat": "p95"}]],
            0,
            12,
        ),
        widget(
            "ECS CPU",
            [
                ["AWS/ECS", "CPUUtilization", "ClusterName", cluster, "ServiceName", s]
                for s in services
            ],
            6,
            0,
        ),
        widget(
            "ECS memory",
            [
                ["AWS/ECS", "MemoryUtilization", "ClusterName", cluster, "ServiceName", s]
                for s in services
            ],
            6,
            12,
        ),
        widget(
            "RDS CPU and connections",
            [
                ["AWS/RDS", "CPUUtilization", "DBInstanceIdentifier", database],
                ["AWS/RDS", "DatabaseConnections", "DBInstanceIdentifier", database],
            ],
            12,
            0,
        ),
        widget(
            "RDS free storage",
            [["AWS/RDS", "FreeStorageSpace", "DBInstanceIdentifier", database]],
            12,
            12,
        ),
        widget(
            "Redis engine CPU",
            [["AWS/ElastiCache", "EngineCPUUtilization", "CacheClusterId", n] for n in cache_nodes],
            18,
            0,
        ),
        widget(
            "Redis evictions",
            [
                ["AWS/ElastiCache", "Evictions", "CacheClusterId", n, {"stat": "Sum"}]
                for n in cache_nodes
            ],
            18,
            12,
        ),
    ]
    return json.dumps({"widgets": widgets})
