"""AWS provider-assigned outputs and invoke answers for the offline runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.plans.mocks import COMPUTED, ID_PREFIXES, INVOKES, NewResource, Target, digest

ID_PREFIXES.update({
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/eip:Eip": "eipalloc",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:ec2/flowLog:FlowLog": "fl",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
})


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


INVOKES.update({
    "aws:index/getAvailabilityZones:getAvailabilityZones": _availability_zones,
    "aws:index/getCallerIdentity:getCallerIdentity": _caller_identity,
    "aws:index/getRegion:getRegion": _region,
})


def _vpc(resource: NewResource) -> dict[str, Any]:
    return {"defaultSecurityGroupId": f"sg-{digest(resource.urn, 17)}"}


def _log_group(resource: NewResource) -> dict[str, Any]:
    t = resource.target
    return {"arn": f"arn:aws:logs:{t.region}:{t.account}:log-group:{resource.physical_name}"}


def _iam(resource: NewResource) -> dict[str, Any]:
    kind = resource.type.split("/")[1].split(":")[0]
    return {"arn": f"arn:aws:iam::{resource.target.account}:{kind}/{resource.physical_name}"}


COMPUTED.update({
    "aws:ec2/vpc:Vpc": _vpc,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:iam/role:Role": _iam,
    "aws:iam/policy:Policy": _iam,
})
