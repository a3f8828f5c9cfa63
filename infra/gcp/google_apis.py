"""Which Google API each pulumi-gcp resource module calls: the table the stack enables its APIs
from (``infra/gcp/apis.py``) and the deploy-readiness rule gcp-api-enabled checks plans against.

Plain data without the Pulumi SDK, so the policy catalogue (and every command that lists it,
`python -m infra affected` among them) loads without it.
"""

from __future__ import annotations

# The API each resource module of pulumi-gcp calls (type token module -> service). The
# deploy-readiness rule gcp-api-enabled reads the same table.
API_OF_MODULE = {
    "artifactregistry": "artifactregistry.googleapis.com",
    "cloudrunv2": "run.googleapis.com",
    "compute": "compute.googleapis.com",
    "dns": "dns.googleapis.com",
    "kms": "cloudkms.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
    "projects": "cloudresourcemanager.googleapis.com",
    "redis": "redis.googleapis.com",
    "secretmanager": "secretmanager.googleapis.com",
    "serviceaccount": "iam.googleapis.com",
    "servicenetworking": "servicenetworking.googleapis.com",
    "sql": "sqladmin.googleapis.com",
    "vpcaccess": "vpcaccess.googleapis.com",
}
# Needed without a resource of their own: ServiceIdentity resources call Service Usage.
EXTRA_APIS = ("serviceusage.googleapis.com", "iamcredentials.googleapis.com")
# Resource types that manage APIs themselves (and so cannot wait for them).
ENABLES_APIS = frozenset({"gcp:projects/service:Service"})


def required_apis() -> list[str]:
    return sorted({*API_OF_MODULE.values(), *EXTRA_APIS})
