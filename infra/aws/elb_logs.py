"""Who writes ALB access logs into a bucket, per region (no SDK import: the policy rules use it).

Regions opened before August 2022 deliver from a regional Elastic Load Balancing account; the
ones opened since deliver as the ``logdelivery.elasticloadbalancing.amazonaws.com`` service
principal, and have no account (so ``aws.elb.get_service_account`` has nothing to answer there).
Source: https://docs.aws.amazon.com/elasticloadbalancing/latest/application/
enable-access-logging.html (the same table as hashicorp/terraform-provider-aws
internal/service/elb/service_account_data_source.go).
"""

from __future__ import annotations

from typing import Any

LOG_DELIVERY_SERVICE = "logdelivery.elasticloadbalancing.amazonaws.com"

ELB_LOG_ACCOUNTS = {
    "us-east-1": "127311923021",
    "us-east-2": "033677994240",
    "us-west-1": "027434742980",
    "us-west-2": "797873946194",
    "af-south-1": "098369216593",
    "ap-east-1": "754344448648",
    "ap-southeast-3": "589379963580",
    "ap-south-1": "718504428378",
    "ap-northeast-3": "383597477331",
    "ap-northeast-2": "600734575887",
    "ap-southeast-1": "114774131450",
    "ap-southeast-2": "783225319266",
    "ap-northeast-1": "582318560864",
    "ca-central-1": "985666609251",
    "eu-central-1": "054676820928",
    "eu-west-1": "156460612806",
    "eu-west-2": "652711504416",
    "eu-south-1": "635631232127",
    "eu-west-3": "009996457667",
    "eu-north-1": "897822967062",
    "me-south-1": "076674570225",
    "sa-east-1": "507241528517",
    "us-gov-west-1": "048591011584",
    "us-gov-east-1": "190560391635",
}


def log_writer(region: str) -> dict[str, Any]:
    """The bucket-policy principal that delivers a load balancer's access logs in ``region``."""
    account = ELB_LOG_ACCOUNTS.get(region)
    if account is not None:
        return {"AWS": f"arn:aws:iam::{account}:root"}
    return {"Service": LOG_DELIVERY_SERVICE}
