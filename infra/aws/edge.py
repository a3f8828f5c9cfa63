"""AWS edge: the Application Load Balancer, its TLS listeners, access logs and WAF."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.elb_logs import log_writer
from infra.aws.firewall import HTTP_PORT, HTTPS_PORT
from infra.aws.storage import PrivateBucket, PrivateBucketArgs, deny_insecure_transport
from infra.manifests import ServiceManifest
from infra.settings import EnvironmentSettings
from infra.tagging import tags

# TLS 1.3 only: seed 000 asks for TLS 1.3 on the ALB, seed 002 for "TLS 1.2+"; the stronger wins.
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-3-2021-06"
# Requests per client IP in any five minutes before WAF blocks it.
RATE_LIMIT = 2000
MANAGED_RULE_GROUPS = ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet")
ACCESS_LOG_DAYS = 90
HEALTH_INTERVAL = 30
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 3
# The last listener-rule priority: a catch-all matched after every routed service's rule.
CATCH_ALL_PRIORITY = 50000


@dataclass(frozen=True)
class EdgeArgs:
    settings: EnvironmentSettings
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    services: dict[str, ServiceManifest]
    # The issued (DNS-validated) certificate the HTTPS listener serves; the listener waits for it.
    certificate_arn: pulumi.Input[str]


def _visibility(metric: str) -> aws.wafv2.WebAclRuleVisibilityConfigArgs:
    return aws.wafv2.WebAclRuleVisibilityConfigArgs(
        cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


class Edge(pulumi.ComponentResource):
    """Where traffic enters: HTTPS only, filtered by WAF, logged, spread over healthy tasks."""

    alb_arn: pulumi.Output[str]
    alb_arn_suffix: pulumi.Output[str]
    alb_dns_name: pulumi.Output[str]
    alb_zone_id: pulumi.Output[str]
    https_listener: aws.lb.Listener
    https_listener_arn: pulumi.Output[str]
    listener_rule_arns: dict[str, pulumi.Output[str]]
    alternate_target_group_arns: dict[str, pulumi.Output[str]]
    listener_rules: dict[str, aws.lb.ListenerRule]
    target_group_arns: dict[str, pulumi.Output[str]]
    target_group_arn_suffixes: dict[str, pulumi.Output[str]]
    logs_bucket_name: pulumi.Output[str]
    web_acl_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Edge", name, None, opts)
        settings = args.settings
        assert settings.aws is not None  # noqa: S101 - AWS components run only for AWS stacks
        production = settings.is_production
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"billing-{settings.name}"
        account = settings.aws.account_id
        writer = log_writer(settings.aws.region)

        # ALB access logs support SSE-S3 only, so this bucket is not KMS-encrypted.
        logs = PrivateBucket(
            f"{name}-access-logs",
            PrivateBucketArgs(
                settings=settings,
                bucket=f"{prefix}-alb-logs-{account}",
                expire_days=ACCESS_LOG_DAYS,
                own_policy=False,
            ),
            opts=child,
        )
        logs_policy = aws.s3.BucketPolicy(
            f"{name}-access-logs-policy",
            aws.s3.BucketPolicyArgs(
                bucket=logs.bucket_id,
                policy=logs.arn.apply(
                    lambda arn: json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                deny_insecure_transport(arn),
                                {
                                    # The regional ELB account, or the log-delivery service
                                    # principal in regions opened since August 2022.
                                    "Sid": "LoadBalancerWritesAccessLogs",
                                    "Effect": "Allow",
                                    "Principal": writer,
                                    "Action": "s3:PutObject",
                                    "Resource": f"{arn}/alb/AWSLogs/{account}/*",
                                },
                            ],
                        }
                    )
                ),
            ),
            opts=child,
        )

        alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            aws.lb.LoadBalancerArgs(
                name=prefix,
                load_balancer_type="application",
                internal=False,
                security_groups=[args.security_group_id],
                subnets=args.subnet_ids,
                drop_invalid_header_fields=True,
                desync_mitigation_mode="strictest",
                enable_deletion_protection=production,
                idle_timeout=60,
                access_logs=aws.lb.LoadBalancerAccessLogsArgs(
                    bucket=logs.bucket_name, prefix="alb", enabled=True
                ),
                tags=tags(settings),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs_policy]),
        )

        blue_green = settings.release.blue_green
        target_groups: dict[str, aws.lb.TargetGroup] = {}
        alternates: dict[str, aws.lb.TargetGroup] = {}
        for service, manifest in sorted(args.services.items()):
            if not manifest.public or manifest.port is None or manifest.health_path is None:
                continue
            target_groups[service] = self._target_group(f"{name}-{service}-tg", args, service)
            if blue_green:
                # Blue/green: the new tasks register in the other group, and ECS moves the
                # production rule's traffic between the two (AWS ECS developer guide,
                # "Application Load Balancer resources for blue/green deployments").
                alternates[service] = self._target_group(f"{name}-{service}-tg-alt", args, service)
        # The public service without paths answers every path no rule claims; with none, the
        # listener answers 404 itself.
        default_service = next((s for s in target_groups if not args.services[s].paths), None)
        default_action = (
            aws.lb.ListenerDefaultActionArgs(
                type="forward", target_group_arn=target_groups[default_service].arn
            )
            if default_service is not None
            else aws.lb.ListenerDefaultActionArgs(
                type="fixed-response",
                fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(
                    content_type="text/plain", message_body="Not Found", status_code="404"
                ),
            )
        )
        https = aws.lb.Listener(
            f"{name}-https",
            aws.lb.ListenerArgs(
                load_balancer_arn=alb.arn,
                port=HTTPS_PORT,
                protocol="HTTPS",
                ssl_policy=SSL_POLICY,
                certificate_arn=args.certificate_arn,
                default_actions=[default_action],
                tags=tags(settings),
            ),
            opts=child,
        )
        # A rule per routed service, at the priority its manifest fixes: adding or removing a
        # service never renumbers another (infra/manifests.py, ServiceManifest.priority).
        self.listener_rule_arns = {}
        self.listener_rules = {}
        for service, group_ in sorted(target_groups.items()):
            manifest = args.services[service]
            if not manifest.paths and not blue_green:
                continue
            rule = aws.lb.ListenerRule(
                f"{name}-{service}-route",
                aws.lb.ListenerRuleArgs(
                    listener_arn=https.arn,
                    # Blue/green needs a production rule for the default service too: a catch-all
                    # at the last priority, so every routed service's rule is matched first.
                    priority=manifest.priority if manifest.paths else CATCH_ALL_PRIORITY,
                    actions=[
                        aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=group_.arn)
                    ],
                    conditions=[
                        aws.lb.ListenerRuleConditionArgs(
                            path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(
                                values=manifest.paths or ["/*"]
                            )
                        )
                    ],
                    tags=tags(settings, service),
                ),
                # Blue/green: ECS rewrites the rule's forward action into weights over both groups
                # on every release (go-to-k/cdk-real-drift#1730); the program leaves them to it.
                opts=pulumi.ResourceOptions(
                    parent=self, ignore_changes=["actions"] if blue_green else None
                ),
            )
            self.listener_rule_arns[service] = rule.arn
            self.listener_rules[service] = rule
        aws.lb.Listener(
            f"{name}-http-redirect",
            aws.lb.ListenerArgs(
                load_balancer_arn=alb.arn,
                port=HTTP_PORT,
                protocol="HTTP",
                default_actions=[
                    aws.lb.ListenerDefaultActionArgs(
                        type="redirect",
                        redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                            protocol="HTTPS", port=str(HTTPS_PORT), status_code="HTTP_301"
                        ),
                    )
                ],
                tags=tags(settings),
            ),
            opts=child,
        )

        rules = [
            aws.wafv2.WebAclRuleArgs(
                name=group,
                priority=priority,
                # Count nothing, block what the group blocks. (The SDK leaves this empty
                # args class's __init__ untyped.)
                override_action=aws.wafv2.WebAclRuleOverrideActionArgs(
                    none=aws.wafv2.WebAclRuleOverrideActionNoneArgs(),  # type: ignore[no-untyped-call]
                ),
                statement=aws.wafv2.WebAclRuleStatementArgs(
                    managed_rule_group_statement=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgs(
                        vendor_name="AWS", name=group
                    )
                ),
                visibility_config=_visibility(group),
            )
            for priority, group in enumerate(MANAGED_RULE_GROUPS, start=1)
        ]
        rules.append(
            aws.wafv2.WebAclRuleArgs(
                name="rate-limit",
                priority=len(rules) + 1,
                action=aws.wafv2.WebAclRuleActionArgs(block=aws.wafv2.WebAclRuleActionBlockArgs()),
                statement=aws.wafv2.WebAclRuleStatementArgs(
                    rate_based_statement=aws.wafv2.WebAclRuleStatementRateBasedStatementArgs(
                        limit=RATE_LIMIT, aggregate_key_type="IP"
                    )
                ),
                visibility_config=_visibility("rate-limit"),
            )
        )
        web_acl = aws.wafv2.WebAcl(
            f"{name}-waf",
            aws.wafv2.WebAclArgs(
                name=prefix,
                description="Managed common and known-bad-input rules, per-IP rate limit",
                scope="REGIONAL",
                default_action=aws.wafv2.WebAclDefaultActionArgs(
                    allow=aws.wafv2.WebAclDefaultActionAllowArgs()
                ),
                rules=rules,
                visibility_config=aws.wafv2.WebAclVisibilityConfigArgs(
                    cloudwatch_metrics_enabled=True,
                    metric_name=prefix,
                    sampled_requests_enabled=True,
                ),
                tags=tags(settings),
            ),
            opts=child,
        )
        aws.wafv2.WebAclAssociation(
            f"{name}-waf-alb",
            aws.wafv2.WebAclAssociationArgs(resource_arn=alb.arn, web_acl_arn=web_acl.arn),
            opts=child,
        )
        waf_logs = aws.cloudwatch.LogGroup(
            f"{name}-waf-logs",
            aws.cloudwatch.LogGroupArgs(
                # WAF delivers only to log groups named aws-waf-logs-*.
                name=f"aws-waf-logs-{prefix}",
                retention_in_days=settings.logs.retention_days,
                kms_key_id=args.logs_key_arn,
                tags=tags(settings),
            ),
            # protect: the record of every blocked request.
            opts=pulumi.ResourceOptions(parent=self, protect=production),
        )
        aws.wafv2.WebAclLoggingConfiguration(
            f"{name}-waf-logging",
            aws.wafv2.WebAclLoggingConfigurationArgs(
                resource_arn=web_acl.arn,
                log_destination_configs=[waf_logs.arn],
                # Credentials never reach the logs.
                redacted_fields=[
                    aws.wafv2.WebAclLoggingConfigurationRedactedFieldArgs(
                        single_header=aws.wafv2.WebAclLoggingConfigurationRedactedFieldSingleHeaderArgs(
                            name="authorization"
                        )
                    )
                ],
            ),
            opts=child,
        )

        self.alb_arn = alb.arn
        self.alb_arn_suffix = alb.arn_suffix
        self.alb_dns_name = alb.dns_name
        self.alb_zone_id = alb.zone_id
        self.https_listener = https
        self.https_listener_arn = https.arn
        self.target_group_arns = {s: tg.arn for s, tg in target_groups.items()}
        self.alternate_target_group_arns = {s: tg.arn for s, tg in alternates.items()}
        self.target_group_arn_suffixes = {s: tg.arn_suffix for s, tg in target_groups.items()}
        self.logs_bucket_name = logs.bucket_name
        self.web_acl_arn = web_acl.arn
        self.register_outputs(
            {
                "alb_arn": self.alb_arn,
                "alb_arn_suffix": self.alb_arn_suffix,
                "alb_dns_name": self.alb_dns_name,
                "alb_zone_id": self.alb_zone_id,
                "https_listener_arn": self.https_listener_arn,
                "target_group_arns": self.target_group_arns,
                "alternate_target_group_arns": self.alternate_target_group_arns,
                "listener_rule_arns": self.listener_rule_arns,
                "target_group_arn_suffixes": self.target_group_arn_suffixes,
                "logs_bucket_name": self.logs_bucket_name,
                "web_acl_arn": self.web_acl_arn,
            }
        )

    def _target_group(self, resource: str, args: EdgeArgs, service: str) -> aws.lb.TargetGroup:
        """A service's target group: its port, health-checked on its health path."""
        manifest = args.services[service]
        return aws.lb.TargetGroup(
            resource,
            aws.lb.TargetGroupArgs(
                # Auto-named: a replacement (a new port) exists before the listener moves.
                port=manifest.port,
                protocol="HTTP",
                target_type="ip",
                vpc_id=args.vpc_id,
                # Long enough to finish in-flight requests, short enough for quick deploys.
                deregistration_delay=30,
                health_check=aws.lb.TargetGroupHealthCheckArgs(
                    enabled=True,
                    path=manifest.health_path,
                    port="traffic-port",
                    protocol="HTTP",
                    matcher="200",
                    interval=HEALTH_INTERVAL,
                    timeout=5,
                    healthy_threshold=HEALTHY_THRESHOLD,
                    unhealthy_threshold=UNHEALTHY_THRESHOLD,
                ),
                tags=tags(args.settings, service),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
