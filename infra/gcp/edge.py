"""External HTTPS load balancer in front of the public Cloud Run service, guarded by Cloud Armor."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from infra.settings import EnvironmentSettings
from infra.tagging import labels

# Cloud Armor's preconfigured OWASP Top 10 rule sets (sensitivity 1: few false positives).
OWASP_RULES = (
    "sqli-v33-stable",
    "xss-v33-stable",
    "lfi-v33-stable",
    "rfi-v33-stable",
    "rce-v33-stable",
    "methodenforcement-v33-stable",
    "scannerdetection-v33-stable",
    "protocolattack-v33-stable",
    "sessionfixation-v33-stable",
)
# Requests per client IP per minute before Cloud Armor answers 429.
RATE_LIMIT_PER_MINUTE = 600
DEFAULT_RULE_PRIORITY = 2147483647


def _all_ips() -> gcp.compute.SecurityPolicyRuleMatchArgs:
    return gcp.compute.SecurityPolicyRuleMatchArgs(
        versioned_expr="SRC_IPS_V1",
        config=gcp.compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=["*"]),
    )


@dataclass(frozen=True)
class EdgeArgs:
    settings: EnvironmentSettings
    # The Cloud Run service that answers every path no rule claims.
    service_name: pulumi.Input[str]
    # Services routed by path: manifest name -> (Cloud Run service name, path prefixes).
    routes: dict[str, tuple[pulumi.Input[str], list[str]]] = field(default_factory=dict)


class Edge(pulumi.ComponentResource):
    """Address, serverless NEG, Cloud Armor, TLS policy, certificate and HTTP->HTTPS redirect."""

    ip_address: pulumi.Output[str]
    url: pulumi.Output[str]
    backend_service_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Edge", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        domain = settings.gcp.domain
        prefix = f"billing-{settings.name}"
        child = pulumi.ResourceOptions(parent=self)

        address = gcp.compute.GlobalAddress(
            f"{name}-address",
            gcp.compute.GlobalAddressArgs(
                name=f"{prefix}-lb", address_type="EXTERNAL", labels=labels(settings, "edge")
            ),
            opts=child,
        )
        endpoints = gcp.compute.RegionNetworkEndpointGroup(
            f"{name}-neg",
            gcp.compute.RegionNetworkEndpointGroupArgs(
                name=f"{prefix}-api",
                region=settings.gcp.region,
                network_endpoint_type="SERVERLESS",
                cloud_run=gcp.compute.RegionNetworkEndpointGroupCloudRunArgs(
                    service=args.service_name
                ),
            ),
            opts=child,
        )
        rules = [
            gcp.compute.SecurityPolicyRuleArgs(
                priority=1000 + index,
                action="deny(403)",
                description=f"OWASP: {rule}",
                match=gcp.compute.SecurityPolicyRuleMatchArgs(
                    expr=gcp.compute.SecurityPolicyRuleMatchExprArgs(
                        expression=f"evaluatePreconfiguredWaf('{rule}', {{'sensitivity': 1}})"
                    )
                ),
            )
            for index, rule in enumerate(OWASP_RULES)
        ]
        rules += [
            gcp.compute.SecurityPolicyRuleArgs(
                priority=2000,
                action="throttle",
                description=f"Rate limit: {RATE_LIMIT_PER_MINUTE} requests per minute per IP",
                match=_all_ips(),
                rate_limit_options=gcp.compute.SecurityPolicyRuleRateLimitOptionsArgs(
                    conform_action="allow",
                    exceed_action="deny(429)",
                    enforce_on_key="IP",
                    rate_limit_threshold=gcp.compute.SecurityPolicyRuleRateLimitOptionsRateLimitThresholdArgs(
                        count=RATE_LIMIT_PER_MINUTE, interval_sec=60
                    ),
                ),
            ),
            gcp.compute.SecurityPolicyRuleArgs(
                priority=DEFAULT_RULE_PRIORITY,
                action="allow",
                description="Default: allow what no rule above denied",
                match=_all_ips(),
            ),
        ]
        armor = gcp.compute.SecurityPolicy(
            f"{name}-armor",
            gcp.compute.SecurityPolicyArgs(
                name=f"{prefix}-armor",
                type="CLOUD_ARMOR",
                description="OWASP rules and per-IP rate limiting for the billing API",
                rules=rules,
                adaptive_protection_config=gcp.compute.SecurityPolicyAdaptiveProtectionConfigArgs(
                    layer7_ddos_defense_config=gcp.compute.SecurityPolicyAdaptiveProtectionConfigLayer7DdosDefenseConfigArgs(
                        enable=True
                    )
                ),
                labels=labels(settings, "edge"),
            ),
            opts=child,
        )
        backend = gcp.compute.BackendService(
            f"{name}-backend",
            gcp.compute.BackendServiceArgs(
                name=f"{prefix}-api",
                load_balancing_scheme="EXTERNAL_MANAGED",
                protocol="HTTPS",
                backends=[gcp.compute.BackendServiceBackendArgs(group=endpoints.id)],
                security_policy=armor.self_link,
                log_config=gcp.compute.BackendServiceLogConfigArgs(enable=True, sample_rate=1.0),
            ),
            opts=child,
        )
        # A serverless NEG and backend per routed service, each behind the same Cloud Armor policy;
        # a URL-map path matcher sends each service's prefixes to it.
        path_rules = []
        for service, (run_name, paths) in sorted(args.routes.items()):
            group = gcp.compute.RegionNetworkEndpointGroup(
                f"{name}-{service}-neg",
                gcp.compute.RegionNetworkEndpointGroupArgs(
                    name=f"{prefix}-{service}",
                    region=settings.gcp.region,
                    network_endpoint_type="SERVERLESS",
                    cloud_run=gcp.compute.RegionNetworkEndpointGroupCloudRunArgs(service=run_name),
                ),
                opts=child,
            )
            routed = gcp.compute.BackendService(
                f"{name}-{service}-backend",
                gcp.compute.BackendServiceArgs(
                    name=f"{prefix}-{service}",
                    load_balancing_scheme="EXTERNAL_MANAGED",
                    protocol="HTTPS",
                    backends=[gcp.compute.BackendServiceBackendArgs(group=group.id)],
                    security_policy=armor.self_link,
                    log_config=gcp.compute.BackendServiceLogConfigArgs(
                        enable=True, sample_rate=1.0
                    ),
                ),
                opts=child,
            )
            path_rules.append(
                gcp.compute.URLMapPathMatcherPathRuleArgs(paths=paths, service=routed.id)
            )
        url_map = gcp.compute.URLMap(
            f"{name}-url-map",
            gcp.compute.URLMapArgs(
                name=f"{prefix}-api",
                default_service=backend.id,
                host_rules=[gcp.compute.URLMapHostRuleArgs(hosts=["*"], path_matcher="services")]
                if path_rules
                else None,
                path_matchers=[
                    gcp.compute.URLMapPathMatcherArgs(
                        name="services", default_service=backend.id, path_rules=path_rules
                    )
                ]
                if path_rules
                else None,
            ),
            opts=child,
        )

        if domain is None:
            # No host name, no certificate: plain HTTP on the address until a domain is set.
            http_target = gcp.compute.TargetHttpProxy(
                f"{name}-http-proxy",
                gcp.compute.TargetHttpProxyArgs(name=f"{prefix}-http", url_map=url_map.id),
                opts=child,
            )
            self._forwarding_rule(name, "http", "80", address.address, http_target.id, settings)
            self.url = pulumi.Output.concat("http://", address.address)
        else:
            # The managed certificate turns ACTIVE only once the domain resolves to the load
            # balancer; until then it stays PROVISIONING and HTTPS fails the handshake
            # (https://cloud.google.com/load-balancing/docs/ssl-certificates/google-managed-certs#update-dns).
            assert settings.gcp.dns_zone is not None  # noqa: S101 - the loader requires it
            gcp.dns.RecordSet(
                f"{name}-dns",
                gcp.dns.RecordSetArgs(
                    managed_zone=settings.gcp.dns_zone,
                    name=f"{domain}.",
                    type="A",
                    ttl=300,
                    rrdatas=[address.address],
                ),
                opts=child,
            )
            certificate = gcp.compute.ManagedSslCertificate(
                f"{name}-certificate",
                gcp.compute.ManagedSslCertificateArgs(
                    name=f"{prefix}-api",
                    managed=gcp.compute.ManagedSslCertificateManagedArgs(domains=[domain]),
                ),
                opts=child,
            )
            tls_policy = gcp.compute.SSLPolicy(
                f"{name}-tls-policy",
                gcp.compute.SSLPolicyArgs(
                    name=f"{prefix}-modern", profile="MODERN", min_tls_version="TLS_1_2"
                ),
                opts=child,
            )
            https_target = gcp.compute.TargetHttpsProxy(
                f"{name}-https-proxy",
                gcp.compute.TargetHttpsProxyArgs(
                    name=f"{prefix}-https",
                    url_map=url_map.id,
                    ssl_certificates=[certificate.id],
                    ssl_policy=tls_policy.id,
                ),
                opts=child,
            )
            self._forwarding_rule(name, "https", "443", address.address, https_target.id, settings)
            redirect = gcp.compute.URLMap(
                f"{name}-redirect",
                gcp.compute.URLMapArgs(
                    name=f"{prefix}-redirect",
                    default_url_redirect=gcp.compute.URLMapDefaultUrlRedirectArgs(
                        https_redirect=True,
                        redirect_response_code="MOVED_PERMANENTLY_DEFAULT",
                        strip_query=False,
                    ),
                ),
                opts=child,
            )
            redirect_target = gcp.compute.TargetHttpProxy(
                f"{name}-redirect-proxy",
                gcp.compute.TargetHttpProxyArgs(name=f"{prefix}-redirect", url_map=redirect.id),
                opts=child,
            )
            self._forwarding_rule(name, "http", "80", address.address, redirect_target.id, settings)
            self.url = pulumi.Output.from_input(f"https://{domain}")

        self.ip_address = address.address
        self.backend_service_name = backend.name
        self.register_outputs(
            {
                "ip_address": self.ip_address,
                "url": self.url,
                "backend_service_name": self.backend_service_name,
            }
        )

    def _forwarding_rule(
        self,
        name: str,
        role: str,
        port: str,
        ip_address: pulumi.Input[str],
        target: pulumi.Input[str],
        settings: EnvironmentSettings,
    ) -> gcp.compute.GlobalForwardingRule:
        return gcp.compute.GlobalForwardingRule(
            f"{name}-{role}",
            gcp.compute.GlobalForwardingRuleArgs(
                name=f"billing-{settings.name}-{role}",
                load_balancing_scheme="EXTERNAL_MANAGED",
                ip_protocol="TCP",
                ip_address=ip_address,
                port_range=port,
                target=target,
                labels=labels(settings, "edge"),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
