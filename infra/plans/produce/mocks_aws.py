"""AWS provider-assigned outputs and invoke answers for the offline runtime."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from infra.plans.produce.mocks import COMPUTED, ID_PREFIXES, INVOKES, NewResource, Target, digest

ID_PREFIXES.update(
    {
        "aws:ec2/vpc:Vpc": "vpc",
        "aws:ec2/subnet:Subnet": "subnet",
        "aws:ec2/internetGateway:InternetGateway": "igw",
        "aws:ec2/natGateway:NatGateway": "nat",
        "aws:ec2/eip:Eip": "eipalloc",
        "aws:ec2/routeTable:RouteTable": "rtb",
        "aws:ec2/securityGroup:SecurityGroup": "sg",
        "aws:ec2/flowLog:FlowLog": "fl",
        "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
    }
)


def _availability_zones(_args: Mapping[str, Any], target: Target) -> dict[str, Any]:
    letters = "abcdef"
    return {
        "names": [f"{target.region}{letter}" for letter in letters],
        "zoneIds": [f"use1-az{index + 1}" for index in range(len(letters))],
        "id": target.region,
    }


def _caller_identity(_args: Mapping[str, Any], target: Target) -> dict[str, Any]:
    return {
        "accountId": target.account,
        "arn": f"arn:aws:iam::{target.account}:role/offline-preview",
        "userId": "OFFLINE",
        "id": target.account,
    }


def _region(_args: Mapping[str, Any], target: Target) -> dict[str, Any]:
    return {"name": target.region, "region": target.region, "id": target.region}


INVOKES.update(
    {
        "aws:index/getAvailabilityZones:getAvailabilityZones": _availability_zones,
        "aws:index/getCallerIdentity:getCallerIdentity": _caller_identity,
        "aws:index/getRegion:getRegion": _region,
    }
)


def _vpc(resource: NewResource) -> dict[str, Any]:
    return {"defaultSecurityGroupId": f"sg-{digest(resource.urn, 17)}"}


def _log_group(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    return {"arn": f"arn:aws:logs:{t.region}:{t.account}:log-group:{resource.physical_name}"}


def _iam(resource: NewResource) -> dict[str, Any]:
    kind = resource.type.split("/")[1].split(":")[0]
    return {"arn": f"arn:aws:iam::{resource.target.account}:{kind}/{resource.physical_name}"}


COMPUTED.update(
    {
        "aws:ec2/vpc:Vpc": _vpc,
        "aws:cloudwatch/logGroup:LogGroup": _log_group,
        "aws:iam/role:Role": _iam,
        "aws:iam/policy:Policy": _iam,
    }
)


# -- the platform's resources -------------------------------------------------------------------

# The ELB account that writes access logs in us-east-1 (AWS documents one per region).
_ELB_ACCOUNT = "127311923021"


def _elb_service_account(_args: Mapping[str, Any], target: Target) -> dict[str, Any]:
    del target
    return {"arn": f"arn:aws:iam::{_ELB_ACCOUNT}:root", "id": _ELB_ACCOUNT}


INVOKES["aws:elb/getServiceAccount:getServiceAccount"] = _elb_service_account


def _kms_key(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    key_id = f"{digest(resource.urn, 8)}-0000-4000-8000-{digest(resource.urn + 'k', 12)}"
    return {"keyId": key_id, "arn": f"arn:aws:kms:{t.region}:{t.account}:key/{key_id}"}


def _secret(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    # Secrets Manager appends six random characters to every secret ARN.
    return {
        "arn": f"arn:aws:secretsmanager:{t.region}:{t.account}:secret:"
        f"{resource.physical_name}-{digest(resource.urn, 6)}"
    }


def _rds_instance(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    identifier = resource.inputs.get("identifier", resource.physical_name)
    address = f"{identifier}.c{digest(resource.urn, 11)}.{t.region}.rds.amazonaws.com"
    port = int(resource.inputs.get("port", 5432))
    return {
        "identifier": identifier,
        "address": address,
        "endpoint": f"{address}:{port}",
        "port": port,
        "arn": f"arn:aws:rds:{t.region}:{t.account}:db:{identifier}",
        "resourceId": f"db-{digest(resource.urn, 26).upper()}",
    }


def _replication_group(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    group = resource.inputs.get("replicationGroupId", resource.physical_name)
    host = f"master.{group}.{digest(resource.urn, 6)}.use1.cache.amazonaws.com"
    return {
        "replicationGroupId": group,
        "primaryEndpointAddress": host,
        "readerEndpointAddress": host.replace("master.", "replica."),
        "port": int(resource.inputs.get("port", 6379)),
        "arn": f"arn:aws:elasticache:{t.region}:{t.account}:replicationgroup:{group}",
    }


def _load_balancer(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    name = resource.physical_name
    suffix = f"app/{name}/{digest(resource.urn, 16)}"
    return {
        "arn": f"arn:aws:elasticloadbalancing:{t.region}:{t.account}:loadbalancer/{suffix}",
        "arnSuffix": suffix,
        "dnsName": f"{name}-{digest(resource.urn, 10)}.{t.region}.elb.amazonaws.com",
        "zoneId": "Z35SXDOTRQ7X7K",
    }


def _target_group(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    suffix = f"targetgroup/{resource.physical_name}/{digest(resource.urn, 16)}"
    return {
        "arn": f"arn:aws:elasticloadbalancing:{t.region}:{t.account}:{suffix}",
        "arnSuffix": suffix,
    }


def _listener(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    return {
        "arn": f"arn:aws:elasticloadbalancing:{t.region}:{t.account}:listener/app/"
        f"{digest(resource.urn, 16)}"
    }


def _bucket(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    name = resource.inputs.get("bucket", resource.physical_name)
    return {
        # A bucket's id is its name.
        "id": name,
        "bucket": name,
        "arn": f"arn:aws:s3:::{name}",
        "bucketDomainName": f"{name}.s3.amazonaws.com",
        "bucketRegionalDomainName": f"{name}.s3.{t.region}.amazonaws.com",
    }


def _distribution(resource: NewResource) -> dict[str, Any]:
    distribution_id = f"E{digest(resource.urn, 13).upper()}"
    return {
        "arn": f"arn:aws:cloudfront::{resource.target.account}:distribution/{distribution_id}",
        "domainName": f"d{digest(resource.urn, 13)}.cloudfront.net",
        "hostedZoneId": "Z2FDTNDATAQYW2",
    }


def _origin_access_control(resource: NewResource) -> dict[str, Any]:
    return {"id": f"E{digest(resource.urn, 13).upper()}"}


def _repository(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    name = resource.inputs.get("name", resource.physical_name)
    return {"repositoryUrl": f"{t.account}.dkr.ecr.{t.region}.amazonaws.com/{name}"}


def _task_definition(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    family = resource.inputs.get("family", resource.physical_name)
    return {"arn": f"arn:aws:ecs:{t.region}:{t.account}:task-definition/{family}:1", "revision": 1}


def _ecs_named(kind: str) -> Callable[[NewResource], dict[str, Any]]:
    def outputs(resource: NewResource) -> dict[str, Any]:
        t = resource.target
        return {"arn": f"arn:aws:ecs:{t.region}:{t.account}:{kind}/{resource.physical_name}"}

    return outputs


def _topic(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    return {"arn": f"arn:aws:sns:{t.region}:{t.account}:{resource.physical_name}"}


def _web_acl(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    return {
        "arn": f"arn:aws:wafv2:{t.region}:{t.account}:regional/webacl/"
        f"{resource.physical_name}/{digest(resource.urn, 12)}"
    }


def _dashboard(resource: NewResource) -> dict[str, Any]:
    return {"dashboardName": resource.inputs.get("dashboardName", resource.physical_name)}


def _record(resource: NewResource) -> dict[str, Any]:
    return {"fqdn": resource.inputs.get("name", resource.physical_name)}


def _certificate(resource: NewResource) -> dict[str, Any]:
    # ACM's DNS validation record: a CNAME under the domain (the value is ACM's own host).
    domain = resource.inputs.get("domainName", resource.physical_name)
    token = digest(resource.urn, 32)
    return {
        "domainValidationOptions": [
            {
                "domainName": domain,
                "resourceRecordName": f"_{token}.{domain}.",
                "resourceRecordType": "CNAME",
                "resourceRecordValue": f"_{digest(token, 32)}.acm-validations.aws.",
            }
        ],
        "status": "PENDING_VALIDATION",
    }


COMPUTED.update(
    {
        "aws:acm/certificate:Certificate": _certificate,
        "aws:kms/key:Key": _kms_key,
        "aws:secretsmanager/secret:Secret": _secret,
        "aws:rds/instance:Instance": _rds_instance,
        "aws:elasticache/replicationGroup:ReplicationGroup": _replication_group,
        "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
        "aws:lb/targetGroup:TargetGroup": _target_group,
        "aws:lb/listener:Listener": _listener,
        "aws:s3/bucket:Bucket": _bucket,
        "aws:cloudfront/distribution:Distribution": _distribution,
        "aws:cloudfront/originAccessControl:OriginAccessControl": _origin_access_control,
        "aws:ecr/repository:Repository": _repository,
        "aws:ecs/taskDefinition:TaskDefinition": _task_definition,
        "aws:ecs/cluster:Cluster": _ecs_named("cluster"),
        "aws:sns/topic:Topic": _topic,
        "aws:wafv2/webAcl:WebAcl": _web_acl,
        "aws:cloudwatch/dashboard:Dashboard": _dashboard,
        "aws:route53/record:Record": _record,
    }
)
