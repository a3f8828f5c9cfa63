"""Resource types that hold data: deleting or replacing one can lose it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATEFUL_TYPES = frozenset(
    {
        # AWS
        "aws:rds/instance:Instance",
        "aws:rds/cluster:Cluster",
        "aws:elasticache/replicationGroup:ReplicationGroup",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketV2:BucketV2",
        "aws:kms/key:Key",
        "aws:secretsmanager/secret:Secret",
        "aws:secretsmanager/secretVersion:SecretVersion",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:ecr/repository:Repository",
        "aws:dynamodb/table:Table",
        # GCP
        "gcp:sql/databaseInstance:DatabaseInstance",
        "gcp:sql/database:Database",
        "gcp:redis/instance:Instance",
        "gcp:storage/bucket:Bucket",
        "gcp:kms/cryptoKey:CryptoKey",
        "gcp:kms/keyRing:KeyRing",
        "gcp:secretmanager/secret:Secret",
        "gcp:secretmanager/secretVersion:SecretVersion",
        "gcp:artifactregistry/repository:Repository",
    }
)


# Inputs that make a database instance a read replica: a copy rebuilt from its source, holding
# no data of its own (aws.rds.Instance replicateSourceDb, gcp.sql.DatabaseInstance
# masterInstanceName).
REPLICA_INPUTS = {
    "aws:rds/instance:Instance": "replicateSourceDb",
    "gcp:sql/databaseInstance:DatabaseInstance": "masterInstanceName",
}


# Inputs that make a new database instance a restore (of a point in time, a snapshot or a backup):
# a copy created beside the live instance, which is kept.
RESTORE_INPUTS: dict[str, tuple[str, ...]] = {
    "aws:rds/instance:Instance": ("restoreToPointInTime", "snapshotIdentifier"),
    "gcp:sql/databaseInstance:DatabaseInstance": ("clone", "restoreBackupContext"),
}


def restore_keys(type_: str, inputs: Mapping[str, Any]) -> list[str]:
    """The restore inputs a new database instance names (empty: not a restore)."""
    return [key for key in RESTORE_INPUTS.get(type_, ()) if inputs.get(key)]


def is_stateful(type_: str) -> bool:
    return type_ in STATEFUL_TYPES


def is_replica(type_: str, inputs: Mapping[str, Any]) -> bool:
    """A read replica: deleting or replacing it loses nothing its source does not hold."""
    key = REPLICA_INPUTS.get(type_)
    return key is not None and bool(inputs.get(key))
