"""Every GCP policy rule against resources that pass and resources that fail."""

from __future__ import annotations

import json

import pytest

from infra.policy.rules import Context
from infra.policy.rules.gcp import GCP
from tests.infra.policy.rules.cases import Case, check_case, in_dev, res

SQL = "gcp:sql/databaseInstance:DatabaseInstance"
REDIS = "gcp:redis/instance:Instance"
GCS = "gcp:storage/bucket:Bucket"
GCP_LABELS = {
    "environment": "production",
    "service": "api",
    "cost-centre": "c",
    "managed-by": "pulumi",
}

CASES: dict[str, Case] = {
    "cloudsql-no-public-ip": Case(
        [res(SQL, settings={"ipConfiguration": {"ipv4Enabled": False}})],
        [res(SQL, settings={"ipConfiguration": {}}), res(SQL)],
    ),
    "cloudsql-no-open-networks": Case(
        [res(SQL, settings={"ipConfiguration": {"authorizedNetworks": [{"value": "10.0.0.0/8"}]}})],
        [res(SQL, settings={"ipConfiguration": {"authorizedNetworks": [{"value": "0.0.0.0/0"}]}})],
    ),
    "cloudsql-require-tls": Case(
        [res(SQL, settings={"ipConfiguration": {"sslMode": "ENCRYPTED_ONLY"}})],
        [res(SQL, settings={"ipConfiguration": {"sslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED"}})],
    ),
    "cloudsql-high-availability": Case(
        [res(SQL, settings={"availabilityType": "REGIONAL"})],
        [res(SQL, settings={"availabilityType": "ZONAL"})],
    ),
    "cloudsql-backups": Case(
        [
            res(
                SQL,
                settings={
                    "backupConfiguration": {"enabled": True, "pointInTimeRecoveryEnabled": True}
                },
            )
        ],
        [
            res(SQL, settings={"backupConfiguration": {"enabled": True}}),
            res(SQL, settings={"backupConfiguration": {"enabled": False}}),
        ],
    ),
    "cloudsql-deletion-protection": Case(
        [res(SQL, deletionProtection=True), res(SQL)], [res(SQL, deletionProtection=False)]
    ),
    "memorystore-encrypted-in-transit": Case(
        [res(REDIS, transitEncryptionMode="SERVER_AUTHENTICATION")],
        [res(REDIS, transitEncryptionMode="DISABLED")],
    ),
    "memorystore-auth": Case([res(REDIS, authEnabled=True)], [res(REDIS, authEnabled=False)]),
    "memorystore-high-availability": Case(
        [res(REDIS, tier="STANDARD_HA")], [res(REDIS, tier="BASIC")]
    ),
    "gcp-kms-rotation": Case(
        [res("gcp:kms/cryptoKey:CryptoKey", rotationPeriod="7776000s")],
        [
            res("gcp:kms/cryptoKey:CryptoKey", rotationPeriod="31536000s"),
            res("gcp:kms/cryptoKey:CryptoKey"),
        ],
    ),
    "gcs-uniform-access": Case([res(GCS, uniformBucketLevelAccess=True)], [res(GCS)]),
    "gcs-public-access-prevention": Case(
        [res(GCS, publicAccessPrevention="enforced")],
        [res(GCS, publicAccessPrevention="inherited")],
    ),
    "gcs-versioning": Case(
        [res(GCS, versioning={"enabled": True})], [res(GCS, versioning={"enabled": False})]
    ),
    "gcp-firewall-no-world-ingress": Case(
        [
            res(
                "gcp:compute/firewall:Firewall",
                sourceRanges=["0.0.0.0/0"],
                allows=[{"protocol": "tcp", "ports": ["443"]}],
            ),
            res(
                "gcp:compute/firewall:Firewall",
                sourceRanges=["0.0.0.0/0"],
                direction="EGRESS",
                allows=[{"protocol": "tcp"}],
            ),
        ],
        [
            res(
                "gcp:compute/firewall:Firewall",
                sourceRanges=["0.0.0.0/0"],
                allows=[{"protocol": "tcp", "ports": ["22"]}],
            )
        ],
    ),
    "gcp-subnet-flow-logs": Case(
        [res("gcp:compute/subnetwork:Subnetwork", logConfig={"flowSampling": 0.5})],
        [res("gcp:compute/subnetwork:Subnetwork")],
    ),
    "gcp-subnet-private-google-access": Case(
        [res("gcp:compute/subnetwork:Subnetwork", privateIpGoogleAccess=True)],
        [res("gcp:compute/subnetwork:Subnetwork", privateIpGoogleAccess=False)],
    ),
    "gcp-modern-tls": Case(
        [res("gcp:compute/sSLPolicy:SSLPolicy", minTlsVersion="TLS_1_2", profile="MODERN")],
        [res("gcp:compute/sSLPolicy:SSLPolicy", minTlsVersion="TLS_1_0", profile="COMPATIBLE")],
    ),
    "cloudrun-ingress-via-load-balancer": Case(
        [res("gcp:cloudrunv2/service:Service", ingress="INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER")],
        [res("gcp:cloudrunv2/service:Service")],
    ),
    "cloudrun-secrets-not-in-environment": Case(
        [
            res(
                "gcp:cloudrunv2/service:Service",
                template={
                    "containers": [
                        {
                            "envs": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {
                                    "name": "JWT_SECRET",
                                    "valueSource": {"secretKeyRef": {"secret": "s"}},
                                },
                            ]
                        }
                    ]
                },
            )
        ],
        [
            res(
                "gcp:cloudrunv2/workerPool:WorkerPool",
                template={"containers": [{"envs": [{"name": "JWT_SECRET", "value": "x"}]}]},
            )
        ],
    ),
    "gcp-required-labels": Case(
        [
            res(REDIS, labels={}),
            res("pulumi:providers:gcp", "gcp", defaultLabels=json.dumps(GCP_LABELS)),
            res(SQL, settings={"userLabels": GCP_LABELS}),
        ],
        [
            res(SQL, settings={"userLabels": {"environment": "production"}}),
            res(REDIS, labels={"service": "cache"}),
        ],
    ),
}

RULES = {rule.name: rule for rule in GCP.rules}


def test_every_gcp_rule_has_a_case() -> None:
    assert sorted(CASES) == sorted(RULES)
    assert all(rule.clouds == ("gcp",) for rule in GCP.rules)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_passes_and_fails(name: str) -> None:
    check_case(RULES[name], CASES[name])


@pytest.mark.parametrize("name", ["cloudsql-high-availability", "memorystore-high-availability"])
def test_production_only_rules_pass_in_dev(name: str) -> None:
    assert RULES[name].evaluate(in_dev(CASES[name].failing), Context("dev")) == []
