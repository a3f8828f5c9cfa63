"""Deploy-readiness rules for GCP: what Cloud Run, Cloud SQL, Secret Manager, KMS and the
Service Usage API refuse, or what fails when the engine creates things in the wrong order."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from infra.gcp.google_apis import API_OF_MODULE, ENABLES_APIS
from infra.policy.readiness.common import (
    NameCheck,
    by_urn,
    check_name,
    name_rule,
    resource_rule,
    stack_rule,
    unknown,
    upstream,
)
from infra.policy.rules.common import (
    Context,
    ResourceView,
    Violation,
    as_int,
    as_list,
    dig,
    of_types,
)

RUN_SERVICE = "gcp:cloudrunv2/service:Service"
RUN_POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
RUN_JOB = "gcp:cloudrunv2/job:Job"
RUN = (RUN_SERVICE, RUN_POOL, RUN_JOB)
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
SECRET = "gcp:secretmanager/secret:Secret"  # noqa: S105 - a type token
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"  # noqa: S105 - a type token
SERVICE_USAGE = "gcp:projects/service:Service"
KEY_GRANT = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
SLEEP = "time:index/sleep:Sleep"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
REPOSITORY_GRANT = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
# Cloud Run's service agent (https://cloud.google.com/iam/docs/service-agents).
RUN_AGENT = "@serverless-robot-prod.iam.gserviceaccount.com"
RFC1035 = r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# ENTERPRISE keeps 1-7 days of transaction log (https://cloud.google.com/sql/docs/postgres/backup-recovery/backups).
ENTERPRISE_LOG_DAYS = 7


def _templates(r: ResourceView) -> Mapping[str, Any]:
    """The revision template of a service or pool, the task template of a job."""
    template = r.inputs.get("template")
    if r.type == RUN_JOB:
        template = dig(template, "template")
    return template if isinstance(template, Mapping) else {}


def _secret_refs(r: ResourceView) -> list[tuple[str, str]]:
    """(key, secret reference) for every secret a Cloud Run workload reads: env and volumes."""
    template = _templates(r)
    refs = []
    for c, container in enumerate(as_list(template.get("containers"))):
        for entry in as_list(dig(container, "envs")):
            secret = dig(entry, "valueSource", "secretKeyRef", "secret")
            if isinstance(secret, str):
                refs.append((f"containers[{c}].envs[{dig(entry, 'name')}]", secret))
    for volume in as_list(template.get("volumes")):
        secret = dig(volume, "secret", "secret")
        if isinstance(secret, str):
            refs.append((f"volumes[{dig(volume, 'name')}]", secret))
    return refs


def _matches(reference: str, secret: ResourceView) -> bool:
    secret_id = secret.inputs.get("secretId")
    return isinstance(secret_id, str) and (
        reference == secret_id or reference.endswith(f"/secrets/{secret_id}")
    )


def _cmek_keys(r: ResourceView) -> list[tuple[str, Any]]:
    """(key, key name) of every customer-managed key a resource encrypts with."""
    keys = [
        ("encryptionKeyName", r.inputs.get("encryptionKeyName")),
        ("kmsKeyName", r.inputs.get("kmsKeyName")),
        ("customerManagedKey", r.inputs.get("customerManagedKey")),
    ]
    replicas = dig(r.inputs, "replication", "userManaged", "replicas")
    for index, replica in enumerate(as_list(replicas)):
        keys.append(
            (
                f"replication.userManaged.replicas[{index}].customerManagedEncryption",
                dig(replica, "customerManagedEncryption", "kmsKeyName"),
            )
        )
    return [(k, v) for k, v in keys if v]


# -- names -----------------------------------------------------------------------------------------


name_rule(
    name="gcp-service-account-id",
    types=("gcp:serviceaccount/account:Account",),
    source="IAM projects.serviceAccounts.create accountId",
    description=(
        "Service account ids: 6-30 lowercase letters, digits and hyphens, starting with a letter."
    ),
    check=NameCheck(
        key="accountId",
        pattern=r"[a-z][-a-z0-9]{4,28}[a-z0-9]",
        max_length=30,
        service="IAM",
        reference="https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/create",
    ),
)


@resource_rule(
    name="gcp-cloud-run-name",
    types=RUN,
    source="Cloud Run Admin API v2 service / job / worker pool name",
    description=(
        "Cloud Run names: lowercase RFC 1035, at most 49 characters for services and pools "
        "(63 jobs)."
    ),
)
def cloud_run_name(r: ResourceView, _: Context) -> Iterator[str]:
    """https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services#Service:
    the revision name appends a suffix, so a service name stays under 50 characters."""
    limit = 63 if r.type == RUN_JOB else 49
    yield from check_name(r.inputs.get("name"), "name", RFC1035, limit, "Cloud Run")


name_rule(
    name="gcp-compute-name",
    types=(
        "gcp:compute/network:Network",
        "gcp:compute/subnetwork:Subnetwork",
        "gcp:compute/globalAddress:GlobalAddress",
        "gcp:compute/backendService:BackendService",
        "gcp:compute/uRLMap:URLMap",
        "gcp:compute/targetHttpsProxy:TargetHttpsProxy",
        "gcp:compute/targetHttpProxy:TargetHttpProxy",
        "gcp:compute/router:Router",
        "gcp:compute/routerNat:RouterNat",
        "gcp:compute/securityPolicy:SecurityPolicy",
        "gcp:compute/sSLPolicy:SSLPolicy",
        "gcp:compute/globalForwardingRule:GlobalForwardingRule",
        "gcp:compute/managedSslCertificate:ManagedSslCertificate",
        "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup",
    ),
    source="Compute Engine resource names (RFC 1035)",
    description=(
        "Compute Engine names: a lowercase letter, then letters, digits and hyphens, 63 at most."
    ),
    check=NameCheck(
        key="name",
        pattern=RFC1035,
        max_length=63,
        service="Compute Engine",
        reference="https://cloud.google.com/compute/docs/naming-resources#resource-name-format",
    ),
)


name_rule(
    name="gcp-secret-id",
    types=(SECRET,),
    source="Secret Manager projects.secrets.create secretId",
    description="Secret ids: letters, digits, underscores and hyphens, 255 at most.",
    check=NameCheck(
        key="secretId",
        pattern=r"[A-Za-z0-9_-]+",
        max_length=255,
        service="Secret Manager",
        reference="https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets/create",
    ),
)


name_rule(
    name="gcp-vpc-connector-name",
    types=("gcp:vpcaccess/connector:Connector",),
    source="Serverless VPC Access connectors.create name",
    description=(
        "Connector names: a lowercase letter, then letters, digits and hyphens, 25 at most."
    ),
    check=NameCheck(
        key="name",
        pattern=r"[a-z][-a-z0-9]{0,23}[a-z0-9]",
        max_length=25,
        service="Serverless VPC Access",
        reference="https://cloud.google.com/vpc/docs/reference/vpcaccess/rest/v1/projects.locations.connectors/create",
    ),
)


name_rule(
    name="gcp-redis-name",
    types=("gcp:redis/instance:Instance",),
    source="Memorystore projects.locations.instances.create instanceId",
    description=(
        "Memorystore ids: a lowercase letter, then letters, digits and hyphens, 40 at most."
    ),
    check=NameCheck(
        key="name",
        pattern=r"[a-z][-a-z0-9]{0,38}[a-z0-9]",
        max_length=40,
        service="Memorystore",
        reference="https://cloud.google.com/memorystore/docs/redis/reference/rest/v1/projects.locations.instances/create",
    ),
)


_LABELLED = (
    SQL,
    SECRET,
    REPOSITORY,
    *RUN,
    "gcp:redis/instance:Instance",
    "gcp:kms/cryptoKey:CryptoKey",
    "gcp:compute/globalAddress:GlobalAddress",
    "gcp:compute/securityPolicy:SecurityPolicy",
    "gcp:compute/globalForwardingRule:GlobalForwardingRule",
)


@resource_rule(
    name="gcp-labels",
    types=_LABELLED,
    source="Resource Manager label requirements",
    description=(
        "Labels: lowercase keys and values of letters, digits, _ and -, 63 each, 64 labels at most."
    ),
)
def labels(r: ResourceView, _: Context) -> Iterator[str]:
    """https://cloud.google.com/resource-manager/docs/labels-overview#requirements"""
    for key in ("labels", "userLabels"):
        value = r.inputs.get(key) if key == "labels" else dig(r.inputs, "settings", key)
        if not isinstance(value, Mapping):
            continue
        if len(value) > 64:
            yield f"{key}: {len(value)} labels, at most 64"
        for name, text in value.items():
            yield from check_name(name, f"{key} key", r"[a-z][a-z0-9_-]*", 63, "a label")
            yield from check_name(text, f"{key}.{name}", r"[a-z0-9_-]*", 63, "a label")


# -- value combinations ----------------------------------------------------------------------------


@resource_rule(
    name="gcp-cloudsql-backup-retention",
    types=(SQL,),
    source='Cloud SQL "backup retention should be > transaction log retention" (Error 400)',
    description="Cloud SQL keeps more backups than days of transaction log.",
)
def cloudsql_backup_retention(r: ResourceView, _: Context) -> Iterator[str]:
    """terraform-google-modules/terraform-google-sql-db#785: instances.insert answers 400
    "Invalid request: backup retention should be > transaction log retention"."""
    backup = dig(r.inputs, "settings", "backupConfiguration")
    if not isinstance(backup, Mapping) or backup.get("enabled") is not True:
        return
    kept = as_int(dig(backup, "backupRetentionSettings", "retainedBackups"))
    kept = 7 if kept is None else kept  # the API's default
    log = as_int(backup.get("transactionLogRetentionDays"))
    log = 7 if log is None else log
    if kept <= log:
        yield (
            f"settings.backupConfiguration: retainedBackups {kept} is not greater than "
            f"transactionLogRetentionDays {log}"
        )


@resource_rule(
    name="gcp-cloudsql-edition",
    types=(SQL,),
    source="Cloud SQL editions: custom tiers need ENTERPRISE (1-7 days of log)",
    description=(
        "Cloud SQL names its edition; custom machine tiers run on ENTERPRISE, which keeps 1-7 days."
    ),
)
def cloudsql_edition(r: ResourceView, _: Context) -> Iterator[str]:
    """https://cloud.google.com/sql/docs/editions-intro: ENTERPRISE_PLUS (the default for new
    PostgreSQL 16+ instances) takes only its predefined tiers; ENTERPRISE keeps 1-7 days of
    transaction log."""
    edition = dig(r.inputs, "settings", "edition")
    tier = str(dig(r.inputs, "settings", "tier") or "")
    if edition is None:
        yield "settings.edition is not set: the API's default depends on the database version"
        return
    if tier.startswith("db-custom-") and edition != "ENTERPRISE":
        yield f"settings.edition {edition} does not offer the custom tier {tier}"
    log = as_int(dig(r.inputs, "settings", "backupConfiguration", "transactionLogRetentionDays"))
    if edition == "ENTERPRISE" and log is not None and not 1 <= log <= ENTERPRISE_LOG_DAYS:
        yield f"transactionLogRetentionDays {log}: ENTERPRISE keeps 1-{ENTERPRISE_LOG_DAYS}"


@resource_rule(
    name="gcp-worker-pool-scaling",
    types=(RUN_POOL,),
    source="Cloud Run Admin API v2 WorkerPool scaling / vpcAccess",
    description=(
        "Worker pools scale manually (manualInstanceCount) and reach the VPC by Direct VPC egress."
    ),
)
def worker_pool(r: ResourceView, _: Context) -> Iterator[str]:
    """https://cloud.google.com/run/docs/configuring/workerpools/manual-scaling and
    https://cloud.google.com/run/docs/configuring/vpc-direct-vpc: worker pools have no request
    signal to autoscale on, and take network interfaces, not a Serverless VPC Access connector."""
    scaling = r.inputs.get("scaling")
    count = as_int(dig(scaling, "manualInstanceCount"))
    if dig(scaling, "scalingMode") != "MANUAL" or count is None or count < 1:
        yield "scaling: set scalingMode MANUAL with a manualInstanceCount of at least 1"
    access = _templates(r).get("vpcAccess")
    if dig(access, "connector"):
        yield "template.vpcAccess.connector: worker pools use networkInterfaces (Direct VPC egress)"


@resource_rule(
    name="gcp-cloud-run-startup-probe",
    types=(RUN_SERVICE,),
    source="Cloud Run revision readiness (startupProbe)",
    description=(
        "Cloud Run services declare a startup probe, so a revision that cannot serve fails `up`."
    ),
)
def startup_probe(r: ResourceView, _: Context) -> Iterator[str]:
    """https://cloud.google.com/run/docs/configuring/healthchecks: the service's create
    operation completes only when the revision is ready, which the startup probe decides."""
    for index, container in enumerate(as_list(_templates(r).get("containers"))):
        if not dig(container, "startupProbe"):
            yield f"template.containers[{index}].startupProbe is not set"


# -- stack-wide ordering and pairing ---------------------------------------------------------------


@stack_rule(
    name="gcp-api-enabled",
    cloud="gcp",
    source="Service Usage: Error 403 API has not been used in project (pulumi/pulumi-gcp#675)",
    description="Every resource waits for its API, enabled by the stack.",
)
def api_enabled(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://github.com/pulumi/pulumi-gcp/issues/675: nothing orders a resource after the API
    it needs unless the program says so; the first `up` in a new project fails with 403."""
    index = by_urn(resources)
    enabled = {str(s.inputs.get("service")): s.urn for s in of_types(resources, SERVICE_USAGE)}
    for resource in resources:
        if not resource.type.startswith("gcp:") or resource.type in ENABLES_APIS:
            continue
        module = resource.type.split(":")[1].split("/")[0]
        api = API_OF_MODULE.get(module)
        if api is None:
            yield Violation(resource.urn, f"type {resource.type}: no API known for its module")
        elif api not in enabled:
            yield Violation(
                resource.urn, f"{api} is not enabled by the stack (gcp:projects/service)"
            )
        elif enabled[api] not in upstream(resource, index):
            yield Violation(
                resource.urn,
                f"does not wait for {api} (depends_on, or a provider that depends on it)",
            )


@stack_rule(
    name="gcp-secret-version-first",
    cloud="gcp",
    source="Cloud Run: secret version latest not found (terraform-provider-google#10846)",
    description=(
        "Every secret a Cloud Run workload reads has a version created before the workload."
    ),
)
def secret_version_first(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://github.com/hashicorp/terraform-provider-google/issues/10846: a revision that
    references "latest" of a secret with no version fails to deploy."""
    index = by_urn(resources)
    secrets = of_types(resources, SECRET)
    versions = of_types(resources, SECRET_VERSION)
    for workload in of_types(resources, *RUN):
        before = upstream(workload, index)
        for key, reference in _secret_refs(workload):
            if unknown(reference):
                continue
            named = [s for s in secrets if _matches(reference, s)]
            if not named:
                continue
            ready = [v for v in versions if named[0].urn in v.dependencies and v.urn in before]
            if not ready:
                yield Violation(
                    workload.urn,
                    f"{key}: {named[0].inputs.get('secretId')} has no "
                    "version the workload waits for",
                )


@stack_rule(
    name="gcp-cmek-grant-propagated",
    cloud="gcp",
    source='CMEK: "Unable to delegate the access of CMEK" (terraform-provider-google#17333)',
    description="Resources encrypted with a customer key wait for the agent's grant to propagate.",
)
def cmek_propagated(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://cloud.google.com/iam/docs/access-change-propagation: a grant takes up to minutes
    to take effect; a CMEK resource created right after its agent's grant fails."""
    index = by_urn(resources)
    grants = {g.urn for g in of_types(resources, KEY_GRANT)}
    waits = [w for w in of_types(resources, SLEEP) if grants & upstream(w, index)]
    for resource in resources:
        for key, _name in _cmek_keys(resource):
            before = upstream(resource, index)
            if not any(w.urn in before for w in waits):
                yield Violation(
                    resource.urn,
                    f"{key}: created without waiting for the key "
                    "grant to propagate (a time:index/sleep after it)",
                )
                break


@stack_rule(
    name="gcp-managed-certificate-dns",
    cloud="gcp",
    source="Google-managed SSL certificates: domain status FAILED_NOT_VISIBLE",
    description=(
        "Every managed certificate's domain gets an A record for the load balancer in the stack."
    ),
)
def managed_certificate_dns(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://cloud.google.com/load-balancing/docs/ssl-certificates/troubleshooting: the
    certificate stays PROVISIONING until its domain resolves to the load balancer's address."""
    index = by_urn(resources)
    addresses = {a.urn for a in of_types(resources, "gcp:compute/globalAddress:GlobalAddress")}
    records = of_types(resources, "gcp:dns/recordSet:RecordSet")
    for certificate in of_types(
        resources, "gcp:compute/managedSslCertificate:ManagedSslCertificate"
    ):
        for domain in as_list(dig(certificate.inputs, "managed", "domains")):
            pointing = [
                r
                for r in records
                if r.inputs.get("name") == f"{domain}."
                and r.inputs.get("type") == "A"
                and addresses & upstream(r, index)
            ]
            if not pointing:
                yield Violation(
                    certificate.urn,
                    f"managed.domains {domain}: no A record for the "
                    "load balancer's address in the stack",
                )


@stack_rule(
    name="gcp-image-pullable",
    cloud="gcp",
    source="Cloud Run: image not found or permission denied (Artifact Registry reader)",
    description=(
        "Cloud Run images are digests in the stack's Artifact Registry, which Cloud Run may read."
    ),
)
def image_pullable(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://cloud.google.com/run/docs/deploying#images: Cloud Run pulls as its service agent,
    which needs roles/artifactregistry.reader on the repository; a tag resolves once, a digest
    is what the environment tested."""
    repositories = {str(r.inputs.get("repositoryId")): r for r in of_types(resources, REPOSITORY)}
    readable = {
        str(g.inputs.get("repository"))
        for g in of_types(resources, REPOSITORY_GRANT)
        if g.inputs.get("role")
        in ("roles/artifactregistry.reader", "roles/artifactregistry.writer")
        and RUN_AGENT in str(g.inputs.get("member", ""))
    }
    for workload in of_types(resources, *RUN):
        for c, container in enumerate(as_list(_templates(workload).get("containers"))):
            image = str(dig(container, "image") or "")
            if unknown(image):
                continue
            key = f"containers[{c}].image"
            parts = image.split("/")
            if not DIGEST.search(image):
                yield Violation(workload.urn, f"{key} {image} is not pinned by digest")
            elif (
                not parts[0].endswith("-docker.pkg.dev")
                or len(parts) < 4
                or (parts[2] not in repositories)
            ):
                yield Violation(
                    workload.urn,
                    f"{key} {image} is not in an Artifact Registry repository of the stack",
                )
            elif parts[2] not in readable:
                yield Violation(
                    workload.urn,
                    f"{key}: Cloud Run's service agent has no reader "
                    f"grant on repository {parts[2]}",
                )


@stack_rule(
    name="gcp-memorystore-ca-delivered",
    cloud="gcp",
    source="Memorystore in-transit encryption: clients must trust the instance's server CA",
    description="A TLS Memorystore instance's server CA reaches the workloads as a secret version.",
)
def memorystore_ca(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://cloud.google.com/memorystore/docs/redis/in-transit-encryption: the instance's
    certificate chains to a CA of its own, which the system trust store does not hold."""
    versions = of_types(resources, SECRET_VERSION)
    secrets = of_types(resources, SECRET)
    mounted = {
        s.urn
        for w in of_types(resources, *RUN)
        for volume in as_list(_templates(w).get("volumes"))
        if isinstance(reference := dig(volume, "secret", "secret"), str)
        for s in secrets
        if _matches(reference, s)
    }
    for redis in of_types(resources, "gcp:redis/instance:Instance"):
        if redis.inputs.get("transitEncryptionMode") != "SERVER_AUTHENTICATION":
            continue
        carried = [
            v for v in versions if redis.urn in v.dependencies and mounted & set(v.dependencies)
        ]
        if not carried:
            yield Violation(
                redis.urn,
                "transitEncryptionMode: no secret mounted by a workload "
                "carries the instance's serverCaCerts",
            )
