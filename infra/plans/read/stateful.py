"""Resource types that hold data: deleting or replacing one can lose it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Every resource type that holds data, with the inputs whose change forces a replacement (the
# providers' ForceNew arguments): an update to one of them is a replacement in disguise.
REPLACE_KEYS: dict[str, frozenset[str]] = {
    "aws:rds/instance:Instance": frozenset(
        {
            "identifier",
            "identifierPrefix",
            "engine",
            "storageEncrypted",
            "kmsKeyId",
            "username",
            "dbName",
            "availabilityZone",
            "characterSetName",
            "snapshotIdentifier",
            "timezone",
            "restoreToPointInTime",
        }
    ),
    "aws:rds/cluster:Cluster": frozenset(
        {
            "clusterIdentifier",
            "engine",
            "storageEncrypted",
            "kmsKeyId",
            "masterUsername",
            "databaseName",
            "availabilityZones",
        }
    ),
    "aws:elasticache/replicationGroup:ReplicationGroup": frozenset(
        {
            "replicationGroupId",
            "atRestEncryptionEnabled",
            "kmsKeyId",
            "subnetGroupName",
            "engine",
            "snapshotArns",
            "snapshotName",
        }
    ),
    "aws:s3/bucket:Bucket": frozenset({"bucket", "bucketPrefix", "objectLockEnabled"}),
    "aws:s3/bucketV2:BucketV2": frozenset({"bucket", "bucketPrefix", "objectLockEnabled"}),
    "aws:kms/key:Key": frozenset(
        {
            "customerMasterKeySpec",
            "keyUsage",
            "multiRegion",
            "customKeyStoreId",
        }
    ),
    "aws:secretsmanager/secret:Secret": frozenset({"name", "namePrefix"}),
    "aws:secretsmanager/secretVersion:SecretVersion": frozenset(),  # none listed yet
    "aws:cloudwatch/logGroup:LogGroup": frozenset({"name", "namePrefix"}),
    "aws:ecr/repository:Repository": frozenset({"name"}),
    "aws:dynamodb/table:Table": frozenset({"name", "hashKey", "rangeKey"}),
    "gcp:sql/databaseInstance:DatabaseInstance": frozenset(
        {
            "name",
            "region",
            "project",
            "databaseVersion",
            "masterInstanceName",
            "encryptionKeyName",
            "clone",
        }
    ),
    "gcp:sql/database:Database": frozenset({"name", "instance", "project"}),
    "gcp:redis/instance:Instance": frozenset(
        {
            "name",
            "region",
            "project",
            "tier",
            "locationId",
            "authorizedNetwork",
            "connectMode",
            "transitEncryptionMode",
            "reservedIpRange",
            "customerManagedKey",
        }
    ),
    "gcp:storage/bucket:Bucket": frozenset({"name", "location", "project"}),
    "gcp:kms/cryptoKey:CryptoKey": frozenset({"name", "keyRing", "purpose"}),
    "gcp:kms/keyRing:KeyRing": frozenset({"name", "location", "project"}),
    "gcp:secretmanager/secret:Secret": frozenset({"secretId", "replication", "project"}),
    "gcp:secretmanager/secretVersion:SecretVersion": frozenset(),  # none listed yet
    "gcp:artifactregistry/repository:Repository": frozenset({"repositoryId", "location", "format"}),
}

STATEFUL_TYPES = frozenset(REPLACE_KEYS)


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
