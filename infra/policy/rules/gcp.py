"""The policy rules over GCP resources: Cloud SQL, Memorystore, KMS, Storage, network, Cloud Run.

Each rule names the Checkov check (or CIS benchmark item) it corresponds to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from infra.policy.rules.common import (
    SECRET_WORDS,
    WEB_PORTS,
    WORLD,
    Catalogue,
    Context,
    ResourceView,
    ValueCheck,
    Violation,
    as_int,
    as_list,
    get,
    is_true,
    primary,
    provider_defaults,
)
from infra.settings import Enforcement
from infra.tagging import REQUIRED_LABELS

GCP = Catalogue("gcp")

SQL = ("gcp:sql/databaseInstance:DatabaseInstance",)
REDIS = ("gcp:redis/instance:Instance",)
GCS = ("gcp:storage/bucket:Bucket",)


GCP.value_rule(
    name="cloudsql-no-public-ip",
    types=SQL,
    controls=("CKV_GCP_60",),
    description="Cloud SQL instances have no public IPv4 address.",
    # Cloud SQL turns a public address on unless ipv4Enabled is explicitly false.
    check=ValueCheck(key="settings.ipConfiguration.ipv4Enabled", expected=(False,)),
)


@GCP.resource_rule(
    name="cloudsql-no-open-networks",
    types=SQL,
    controls=("CKV_GCP_11",),
    description="Cloud SQL authorised networks never include 0.0.0.0/0.",
)
def cloudsql_no_open_networks(r: ResourceView, _: Context) -> Iterator[str]:
    for network in as_list(get(r.inputs, "settings.ipConfiguration.authorizedNetworks")):
        if isinstance(network, Mapping) and network.get("value") in WORLD:
            yield f"authorizedNetworks includes {network.get('value')}"


GCP.value_rule(
    name="cloudsql-require-tls",
    types=SQL,
    controls=("CKV_GCP_6",),
    description="Cloud SQL accepts only encrypted connections.",
    check=ValueCheck(
        key="settings.ipConfiguration.sslMode",
        expected=("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"),
    ),
)


GCP.value_rule(
    name="cloudsql-high-availability",
    types=SQL,
    controls=("CIS GCP 6.x (seed: HA in production)",),
    description="Cloud SQL is regional (HA) in production.",
    check=ValueCheck(
        key="settings.availabilityType",
        expected=("REGIONAL",),
        production_only=True,
        applies=primary,
    ),
)


@GCP.resource_rule(
    name="cloudsql-backups",
    types=SQL,
    controls=("CKV_GCP_14",),
    description="Cloud SQL backs up daily; production also keeps point-in-time recovery.",
)
def cloudsql_backups(r: ResourceView, ctx: Context) -> Iterator[str]:
    if not primary(r):
        return
    if not is_true(r.inputs, "settings.backupConfiguration.enabled"):
        yield "settings.backupConfiguration.enabled is not true"
    elif ctx.production and not is_true(
        r.inputs, "settings.backupConfiguration.pointInTimeRecoveryEnabled"
    ):
        yield "point-in-time recovery is off in production"


GCP.value_rule(
    name="cloudsql-deletion-protection",
    types=SQL,
    controls=("AWS Security Hub RDS.8 (GCP equivalent)",),
    description="Cloud SQL keeps deletion protection in production.",
    # The provider defaults deletionProtection to true: only an explicit false disables it.
    check=ValueCheck(
        key="deletionProtection", forbidden=(False,), production_only=True, applies=primary
    ),
)


GCP.value_rule(
    name="memorystore-encrypted-in-transit",
    types=REDIS,
    controls=("CKV_GCP_97",),
    description="Memorystore encrypts traffic in transit.",
    check=ValueCheck(key="transitEncryptionMode", expected=("SERVER_AUTHENTICATION",)),
)


GCP.value_rule(
    name="memorystore-auth",
    types=REDIS,
    controls=("CKV_GCP_95",),
    description="Memorystore requires AUTH.",
    check=ValueCheck(key="authEnabled"),
)


GCP.value_rule(
    name="memorystore-high-availability",
    types=REDIS,
    controls=("AWS Security Hub ElastiCache.3 (GCP equivalent)",),
    description="Memorystore is STANDARD_HA in production.",
    check=ValueCheck(key="tier", expected=("STANDARD_HA",), production_only=True),
)


@GCP.resource_rule(
    name="gcp-kms-rotation",
    types=("gcp:kms/cryptoKey:CryptoKey",),
    controls=("CKV_GCP_43",),
    description="Cloud KMS keys rotate at least every 90 days.",
)
def gcp_kms_rotation(r: ResourceView, _: Context) -> Iterator[str]:
    period = str(r.inputs.get("rotationPeriod") or "")
    seconds = as_int(period.removesuffix("s"))
    if seconds is None or seconds > 90 * 86400:
        yield f"rotationPeriod is {period or 'unset'}; at most 7776000s"


GCP.value_rule(
    name="gcs-uniform-access",
    types=GCS,
    controls=("CKV_GCP_29",),
    description="Storage buckets use uniform bucket-level access.",
    check=ValueCheck(key="uniformBucketLevelAccess"),
)


GCP.value_rule(
    name="gcs-public-access-prevention",
    types=GCS,
    controls=("CKV_GCP_114",),
    description="Storage buckets enforce public access prevention.",
    check=ValueCheck(key="publicAccessPrevention", expected=("enforced",)),
)


GCP.value_rule(
    name="gcs-versioning",
    types=GCS,
    controls=("CKV_GCP_78",),
    description="Storage buckets keep object versions.",
    check=ValueCheck(key="versioning.enabled"),
)


@GCP.resource_rule(
    name="gcp-firewall-no-world-ingress",
    types=("gcp:compute/firewall:Firewall",),
    controls=("CKV_GCP_2", "CKV_GCP_3", "CKV_GCP_106"),
    description="Firewall rules admit 0.0.0.0/0 only on 80/443.",
)
def gcp_firewall_no_world(r: ResourceView, _: Context) -> Iterator[str]:
    if str(r.inputs.get("direction", "INGRESS")) != "INGRESS":
        return
    if not set(as_list(r.inputs.get("sourceRanges"))) & WORLD:
        return
    for allow in as_list(r.inputs.get("allows")):
        ports = (
            {str(p) for p in as_list(allow.get("ports"))} if isinstance(allow, Mapping) else set()
        )
        if not ports or not ports <= {str(p) for p in WEB_PORTS}:
            yield f"ingress from the whole internet on {sorted(ports) or 'all ports'}"


@GCP.resource_rule(
    name="gcp-subnet-flow-logs",
    types=("gcp:compute/subnetwork:Subnetwork",),
    controls=("CKV_GCP_26",),
    description="Subnetworks record VPC flow logs.",
)
def gcp_subnet_flow_logs(r: ResourceView, _: Context) -> Iterator[str]:
    if not isinstance(get(r.inputs, "logConfig"), Mapping):
        yield "no logConfig"


GCP.value_rule(
    name="gcp-subnet-private-google-access",
    types=("gcp:compute/subnetwork:Subnetwork",),
    controls=("CKV_GCP_74",),
    description="Subnetworks reach Google APIs privately.",
    check=ValueCheck(key="privateIpGoogleAccess"),
)


@GCP.resource_rule(
    name="gcp-modern-tls",
    types=("gcp:compute/sSLPolicy:SSLPolicy",),
    controls=("CIS GCP 3.9",),
    description="Load balancer SSL policies require TLS 1.2 with a MODERN or RESTRICTED profile.",
)
def gcp_modern_tls(r: ResourceView, _: Context) -> Iterator[str]:
    if r.inputs.get("minTlsVersion") != "TLS_1_2":
        yield f"minTlsVersion is {r.inputs.get('minTlsVersion')}"
    if r.inputs.get("profile") not in ("MODERN", "RESTRICTED"):
        yield f"profile is {r.inputs.get('profile')}"


GCP.value_rule(
    name="cloudrun-ingress-via-load-balancer",
    types=("gcp:cloudrunv2/service:Service",),
    controls=("CKV_GCP_102 (seed: traffic through the load balancer)",),
    description="Cloud Run takes traffic only through the load balancer or the VPC.",
    check=ValueCheck(
        key="ingress", forbidden=("INGRESS_TRAFFIC_ALL",), default="INGRESS_TRAFFIC_ALL"
    ),
    enforcement=Enforcement.ADVISORY,
)


@GCP.resource_rule(
    name="cloudrun-secrets-not-in-environment",
    types=("gcp:cloudrunv2/service:Service", "gcp:cloudrunv2/workerPool:WorkerPool"),
    controls=("AWS Security Hub ECS.8 (GCP equivalent)",),
    description=(
        "Credentials reach Cloud Run through Secret Manager references, never plain values."
    ),
)
def cloudrun_secrets_not_in_environment(r: ResourceView, _: Context) -> Iterator[str]:
    containers = as_list(get(r.inputs, "template.containers")) or as_list(
        get(r.inputs, "template.template.containers")
    )
    for c in containers:
        for variable in as_list(c.get("envs")) if isinstance(c, Mapping) else []:
            if not isinstance(variable, Mapping) or "value" not in variable:
                continue
            name = str(variable.get("name", ""))
            if any(word in name.upper() for word in SECRET_WORDS):
                yield f"{name} is a plain environment value"


# Resources whose labels are not top-level `labels` (so provider default labels do not reach them).
_LABEL_PATHS = {"gcp:sql/databaseInstance:DatabaseInstance": "settings.userLabels"}


@GCP.stack_rule(
    name="gcp-required-labels",
    controls=("CKV_GCP_LABELS (required labels)",),
    description=(
        "Labelled GCP resources carry the required labels (own or provider default labels)."
    ),
)
def gcp_required_labels(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    defaults = provider_defaults(resources, "pulumi:providers:gcp", "defaultLabels")
    for r in resources:
        if not r.custom or not r.type.startswith("gcp:"):
            continue
        path = _LABEL_PATHS.get(r.type)
        if path is not None:
            own, inherited = get(r.inputs, path), {}
        elif "labels" in r.inputs:
            own, inherited = r.inputs.get("labels"), defaults
        else:
            continue
        labels = inherited | (dict(own) if isinstance(own, Mapping) else {})
        missing = [t for t in REQUIRED_LABELS if not labels.get(t)]
        if missing:
            yield Violation(r.urn, f"missing labels: {', '.join(missing)}")
