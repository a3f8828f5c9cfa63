"""Cloud Monitoring: the AWS alarms' counterparts, an uptime check on /health, a dashboard."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.database import max_connections
from infra.settings import EnvironmentSettings
from infra.tagging import labels

# Thresholds from the seed's "Monitoring and Alerts" (001): 5xx > 1% of requests,
# CPU or memory > 80% for 5 minutes, p95 response time > 1 s, storage > 90% full.
ERROR_RATE = 0.01
LATENCY_P95_MS = 1000
UTILIZATION = 0.8
DISK_UTILIZATION = 0.9
SUSTAINED = "300s"
ALIGNMENT = "60s"

# A replica further behind than this serves reads older than the RPO (5 minutes) allows for.
REPLICA_LAG_SECONDS = 60


@dataclass(frozen=True)
class Threshold:
    """One alert: a metric filter above (or at) a value for a while."""

    key: str
    title: str
    value: float
    aligner: str
    comparison: str = "COMPARISON_GT"
    reducer: str | None = None
    denominator_filter: str | None = None


@dataclass(frozen=True)
class ObservabilityArgs:
    settings: EnvironmentSettings
    api_service_name: pulumi.Input[str]
    database_instance_name: pulumi.Input[str]
    replica_names: list[pulumi.Output[str]]
    redis_instance_name: pulumi.Input[str]
    health_host: pulumi.Input[str]
    health_path: str
    health_https: bool
    # The manifest name of the service behind the load balancer's default route.
    front_service: str = "api"


class Observability(pulumi.ComponentResource):
    """A notification channel, an alert policy per threshold, an uptime check and a dashboard."""

    notification_channel_id: pulumi.Output[str]
    alert_policy_names: dict[str, pulumi.Output[str]]
    uptime_check_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Observability", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        child = pulumi.ResourceOptions(parent=self)
        project = settings.gcp.project
        region = settings.gcp.region
        prefix = f"billing-{settings.name}"

        channel = gcp.monitoring.NotificationChannel(
            f"{name}-email",
            gcp.monitoring.NotificationChannelArgs(
                display_name=f"{prefix} on-call",
                type="email",
                labels={"email_address": settings.alarms.email},
                user_labels=labels(settings, "observability"),
            ),
            opts=child,
        )
        uptime = gcp.monitoring.UptimeCheckConfig(
            f"{name}-uptime",
            gcp.monitoring.UptimeCheckConfigArgs(
                display_name=f"{prefix} api health",
                timeout="10s",
                period="60s",
                http_check=gcp.monitoring.UptimeCheckConfigHttpCheckArgs(
                    path=args.health_path,
                    port=443 if args.health_https else 80,
                    use_ssl=args.health_https,
                    validate_ssl=args.health_https,
                    accepted_response_status_codes=[
                        gcp.monitoring.UptimeCheckConfigHttpCheckAcceptedResponseStatusCodeArgs(
                            status_class="STATUS_CLASS_2XX"
                        )
                    ],
                ),
                monitored_resource=gcp.monitoring.UptimeCheckConfigMonitoredResourceArgs(
                    type="uptime_url",
                    labels={"project_id": project, "host": args.health_host},
                ),
                user_labels=labels(settings, "observability"),
            ),
            opts=child,
        )

        def cloud_run(metric: str) -> pulumi.Output[str]:
            return pulumi.Output.concat(
                f'metric.type="run.googleapis.com/{metric}" resource.type="cloud_run_revision" ',
                'resource.label.service_name="',
                args.api_service_name,
                '"',
            )

        def cloud_sql(metric: str, instance: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
            return pulumi.Output.concat(
                f'metric.type="cloudsql.googleapis.com/database/{metric}" ',
                'resource.type="cloudsql_database" resource.label.database_id="',
                project,
                ":",
                args.database_instance_name if instance is None else instance,
                '"',
            )

        def redis(metric: str) -> pulumi.Output[str]:
            return pulumi.Output.concat(
                f'metric.type="redis.googleapis.com/{metric}" resource.type="redis_instance" ',
                f'resource.label.instance_id="projects/{project}/locations/{region}/instances/',
                args.redis_instance_name,
                '"',
            )

        api = settings.services[args.front_service]
        connections = max_connections(settings.database.cloud_sql_tier)
        thresholds: list[tuple[Threshold, pulumi.Input[str], pulumi.Input[str] | None]] = [
            (
                Threshold(
                    "api-5xx",
                    "API 5xx rate above 1%",
                    ERROR_RATE,
                    "ALIGN_RATE",
                    reducer="REDUCE_SUM",
                ),
                pulumi.Output.concat(
                    cloud_run("request_count"), ' metric.label.response_code_class="5xx"'
                ),
                cloud_run("request_count"),
            ),
            (
                Threshold(
                    "api-latency",
                    "API p95 latency above 1 s",
                    LATENCY_P95_MS,
                    "ALIGN_PERCENTILE_95",
                ),
                cloud_run("request_latencies"),
                None,
            ),
            (
                Threshold(
                    "api-at-max",
                    f"API at its maximum of {api.max_tasks} instances",
                    api.max_tasks,
                    "ALIGN_MAX",
                    comparison="COMPARISON_GE",
                    reducer="REDUCE_SUM",
                ),
                cloud_run("container/instance_count"),
                None,
            ),
            (
                Threshold("db-cpu", "Cloud SQL CPU above 80%", UTILIZATION, "ALIGN_MEAN"),
                cloud_sql("cpu/utilization"),
                None,
            ),
            (
                Threshold("db-disk", "Cloud SQL disk above 90%", DISK_UTILIZATION, "ALIGN_MEAN"),
                cloud_sql("disk/utilization"),
                None,
            ),
            (
                Threshold(
                    "db-connections",
                    f"Cloud SQL connections above 80% of {connections}",
                    round(connections * UTILIZATION),
                    "ALIGN_MAX",
                ),
                cloud_sql("postgresql/num_backends"),
                None,
            ),
            (
                Threshold("redis-memory", "Redis memory above 80%", UTILIZATION, "ALIGN_MAX"),
                redis("stats/memory/usage_ratio"),
                None,
            ),
            (
                # Redis runs commands on one thread: a busy main thread is the ceiling.
                Threshold(
                    "redis-cpu", "Redis main thread CPU above 80%", UTILIZATION, "ALIGN_RATE"
                ),
                redis("stats/cpu_utilization_main_thread"),
                None,
            ),
        ]
        for index, replica in enumerate(args.replica_names, start=1):
            # Each read replica has its own alerts: a lagging replica serves stale reads.
            thresholds += [
                (
                    Threshold(
                        f"db-replica-{index}-lag",
                        f"Read replica {index} more than {REPLICA_LAG_SECONDS} s behind",
                        REPLICA_LAG_SECONDS,
                        "ALIGN_MAX",
                    ),
                    cloud_sql("replication/replica_lag", replica),
                    None,
                ),
                (
                    Threshold(
                        f"db-replica-{index}-cpu",
                        f"Read replica {index} CPU above 80%",
                        UTILIZATION,
                        "ALIGN_MEAN",
                    ),
                    cloud_sql("cpu/utilization", replica),
                    None,
                ),
            ]

        self.alert_policy_names = {}
        for threshold, metric_filter, denominator in thresholds:
            aggregation = gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                alignment_period=ALIGNMENT,
                per_series_aligner=threshold.aligner,
                cross_series_reducer=threshold.reducer,
            )
            denominator_aggregation = (
                gcp.monitoring.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs(
                    alignment_period=ALIGNMENT,
                    per_series_aligner=threshold.aligner,
                    cross_series_reducer=threshold.reducer,
                )
            )
            policy = gcp.monitoring.AlertPolicy(
                f"{name}-{threshold.key}",
                gcp.monitoring.AlertPolicyArgs(
                    display_name=f"{prefix}: {threshold.title}",
                    combiner="OR",
                    severity="CRITICAL" if threshold.key in {"api-5xx", "db-disk"} else "WARNING",
                    conditions=[
                        gcp.monitoring.AlertPolicyConditionArgs(
                            display_name=threshold.title,
                            condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                                filter=metric_filter,
                                comparison=threshold.comparison,
                                threshold_value=threshold.value,
                                duration=SUSTAINED,
                                aggregations=[aggregation],
                                denominator_filter=denominator,
                                denominator_aggregations=[denominator_aggregation]
                                if denominator is not None
                                else None,
                            ),
                        )
                    ],
                    notification_channels=[channel.id],
                    user_labels=labels(settings, "observability"),
                ),
                opts=child,
            )
            self.alert_policy_names[threshold.key] = policy.name

        uptime_policy = gcp.monitoring.AlertPolicy(
            f"{name}-uptime-failing",
            gcp.monitoring.AlertPolicyArgs(
                display_name=f"{prefix}: API health check failing",
                combiner="OR",
                severity="CRITICAL",
                conditions=[
                    gcp.monitoring.AlertPolicyConditionArgs(
                        display_name="Health check failing from more than one region",
                        condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                            filter=pulumi.Output.concat(
                                'metric.type="monitoring.googleapis.com/uptime_check/check_passed" '
                                'resource.type="uptime_url" metric.label.check_id="',
                                uptime.uptime_check_id,
                                '"',
                            ),
                            comparison="COMPARISON_GT",
                            threshold_value=1,
                            duration=ALIGNMENT,
                            aggregations=[
                                gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                                    alignment_period=ALIGNMENT,
                                    per_series_aligner="ALIGN_NEXT_OLDER",
                                    cross_series_reducer="REDUCE_COUNT_FALSE",
                                    group_by_fields=["resource.label.host"],
                                )
                            ],
                        ),
                    )
                ],
                notification_channels=[channel.id],
                user_labels=labels(settings, "observability"),
            ),
            opts=child,
        )
        self.alert_policy_names["uptime"] = uptime_policy.name

        gcp.monitoring.Dashboard(
            f"{name}-dashboard",
            gcp.monitoring.DashboardArgs(
                dashboard_json=pulumi.Output.all(
                    *[metric_filter for _, metric_filter, _ in thresholds]
                ).apply(
                    lambda filters: _dashboard(
                        f"{prefix} billing platform",
                        {t.title: f for (t, _, _), f in zip(thresholds, filters, strict=True)},
                    )
                )
            ),
            opts=child,
        )

        self.notification_channel_id = channel.id
        self.uptime_check_id = uptime.uptime_check_id
        self.register_outputs(
            {
                "notification_channel_id": self.notification_channel_id,
                "uptime_check_id": self.uptime_check_id,
                **{f"alert_{key}": value for key, value in self.alert_policy_names.items()},
            }
        )


def _dashboard(title: str, charts: Mapping[str, str]) -> str:
    """A mosaic dashboard with one line chart per alerted metric."""
    tiles = [
        {
            "xPos": (index % 2) * 6,
            "yPos": (index // 2) * 4,
            "width": 6,
            "height": 4,
            "widget": {
                "title": chart_title,
                "xyChart": {
                    "dataSets": [
                        {
                            "plotType": "LINE",
                            "timeSeriesQuery": {"timeSeriesFilter": {"filter": metric_filter}},
                        }
                    ]
                },
            },
        }
        for index, (chart_title, metric_filter) in enumerate(charts.items())
    ]
    return json.dumps(
        {"displayName": title, "mosaicLayout": {"columns": 12, "tiles": tiles}}, sort_keys=True
    )
