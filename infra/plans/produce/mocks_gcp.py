"""GCP provider-assigned outputs and invoke answers for the offline runtime."""

from __future__ import annotations

from typing import Any

from infra.plans.produce.mocks import COMPUTED, NewResource, digest

# A made-up project number for service agents' addresses.
_PROJECT_NUMBER = "123456789012"


def _global_address(resource: NewResource) -> dict[str, Any]:
    address = resource.inputs.get("address")
    # 203.0.113.0/24 is reserved for documentation: plainly not a real address.
    return {"address": address if isinstance(address, str) else "203.0.113.10"}


def _sql_instance(resource: NewResource) -> dict[str, Any]:
    target = resource.target
    # The primary keeps .3; replicas and restored instances take the next addresses.
    suffix = resource.physical_name.rsplit("-", 1)[-1]
    host = 3 + int(suffix) if suffix.isdigit() else 3 if suffix == "postgres" else 9
    address = f"10.128.0.{host}"
    return {
        "connectionName": f"{target.account}:{target.region}:{resource.physical_name}",
        "privateIpAddress": address,
        "ipAddresses": [{"ipAddress": address, "type": "PRIVATE"}],
    }


def _redis_instance(resource: NewResource) -> dict[str, Any]:
    return {
        "host": "10.128.1.4",
        # Memorystore's TLS port when transit encryption is on.
        "port": 6378,
        "authString": f"offline-auth-{digest(resource.urn, 24)}",
        "serverCaCerts": [
            {
                "cert": "-----BEGIN CERTIFICATE-----\noffline\n-----END CERTIFICATE-----\n",
                "serialNumber": digest(resource.urn, 12),
            }
        ],
    }


def _service_account(resource: NewResource) -> dict[str, Any]:
    account_id = resource.inputs.get("accountId", resource.physical_name)
    email = f"{account_id}@{resource.target.account}.iam.gserviceaccount.com"
    return {"email": email, "member": f"serviceAccount:{email}", "uniqueId": digest(email, 21)}


# Service agents whose domain is not gcp-sa-<service>
# (https://cloud.google.com/iam/docs/service-agents).
_AGENT_DOMAINS = {"run": "serverless-robot-prod", "sqladmin": "gcp-sa-cloud-sql"}


def _service_identity(resource: NewResource) -> dict[str, Any]:
    service = str(resource.inputs.get("service", "unknown.googleapis.com")).split(".")[0]
    domain = _AGENT_DOMAINS.get(service, f"gcp-sa-{service}")
    email = f"service-{_PROJECT_NUMBER}@{domain}.iam.gserviceaccount.com"
    return {"email": email, "member": f"serviceAccount:{email}"}


def _cloud_run_service(resource: NewResource) -> dict[str, Any]:
    return {"uri": f"https://{resource.physical_name}-{digest(resource.urn, 10)}-uc.a.run.app"}


def _secret(resource: NewResource) -> dict[str, Any]:
    secret_id = resource.inputs.get("secretId", resource.physical_name)
    return {
        "name": f"projects/{_PROJECT_NUMBER}/secrets/{secret_id}",
        # The provider's id for a secret: projects/{{project}}/secrets/{{secret_id}}.
        "id": f"projects/{resource.target.account}/secrets/{secret_id}",
    }


def _uptime_check(resource: NewResource) -> dict[str, Any]:
    return {"uptimeCheckId": f"{resource.physical_name}-{digest(resource.urn, 8)}"}


def _repository(resource: NewResource) -> dict[str, Any]:
    repository_id = resource.inputs.get("repositoryId", resource.physical_name)
    return {"repositoryId": repository_id}


COMPUTED.update(
    {
        "gcp:compute/globalAddress:GlobalAddress": _global_address,
        "gcp:sql/databaseInstance:DatabaseInstance": _sql_instance,
        "gcp:redis/instance:Instance": _redis_instance,
        "gcp:serviceaccount/account:Account": _service_account,
        "gcp:projects/serviceIdentity:ServiceIdentity": _service_identity,
        "gcp:cloudrunv2/service:Service": _cloud_run_service,
        "gcp:secretmanager/secret:Secret": _secret,
        "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": _uptime_check,
        "gcp:artifactregistry/repository:Repository": _repository,
    }
)
