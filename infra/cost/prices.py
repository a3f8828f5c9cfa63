"""The price file (infra/cost/prices.toml): loaded and validated; errors name file and key."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from infra.errors import InfraError
from infra.loading import load_toml_model

PRICES_FILE = Path(__file__).resolve().parent / "prices.toml"

Price = Annotated[float, Field(ge=0)]


class PricesError(InfraError):
    """A price file that cannot be used, named by file and key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Assumptions(_Model):
    log_ingestion_gb_per_group: Price
    s3_storage_gb_per_bucket: Price
    cloudfront_transfer_gb: Price
    alb_lcu: Price
    gcs_storage_gb_per_bucket: Price
    cloud_nat_vms: Price
    secret_versions: Price
    registry_storage_gb: Price


class RegionPrices(_Model):
    cloud: Annotated[str, Field(pattern=r"^(aws|gcp)$")]
    sources: Annotated[list[str], Field(min_length=1)]
    unit: dict[str, Price]
    rds_instance_hour: dict[str, Price] = {}
    cache_node_hour: dict[str, Price] = {}
    cloud_sql_shared_core_hour: dict[str, Price] = {}
    memorystore_gb_hour: dict[str, Price] = {}


class Free(_Model):
    types: list[str]


class Prices(_Model):
    currency: str
    hours_per_month: Annotated[float, Field(gt=0)]
    as_of: dt.date
    assumptions: Assumptions
    regions: dict[str, RegionPrices]
    free: Free


def load_prices(path: Path = PRICES_FILE) -> Prices:
    return load_toml_model(path, Prices, PricesError)


@cache
def prices() -> Prices:
    """The shipped price file, read once."""
    return load_prices()
