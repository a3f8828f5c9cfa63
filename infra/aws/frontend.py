"""AWS frontend (seed 003): the single-page app in a private S3 bucket behind CloudFront."""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra.aws.storage import PrivateBucket, PrivateBucketArgs, deny_insecure_transport
from infra.settings import EnvironmentSettings
from infra.tagging import tags

# AWS managed policies, by their documented ids.
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
SECURITY_HEADERS = "67f7725c-6f97-4210-82d7-5512b31e9d03"
# The SPA routes every unknown path itself: S3 answers 403 for missing keys behind OAC.
SPA_ERRORS = (403, 404)


@dataclass(frozen=True)
class FrontendArgs:
    settings: EnvironmentSettings
    # The built site (index.html and its assets). None: nothing is uploaded, and the stack does
    # not export a URL that would answer 403 (an empty bucket behind origin access control).
    site_dir: Path | None = None


def site_files(site_dir: Path) -> list[Path]:
    """The files of a built site, index.html first-class: without it there is no site."""
    if not (site_dir / "index.html").is_file():
        raise ValueError(f"{site_dir}: no index.html to serve")
    return sorted(p for p in site_dir.rglob("*") if p.is_file())


class Frontend(pulumi.ComponentResource):
    """Static files served over HTTPS only; the bucket answers CloudFront and nobody else."""

    bucket_name: pulumi.Output[str]
    distribution_id: pulumi.Output[str]
    domain_name: pulumi.Output[str]
    # True once the stack uploaded a site: only then is the distribution's URL worth exporting.
    serves_content: bool

    def __init__(
        self, name: str, args: FrontendArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Frontend", name, None, opts)
        settings = args.settings
        assert settings.aws is not None  # noqa: S101 - AWS components run only for AWS stacks
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"billing-{settings.name}"

        site = PrivateBucket(
            f"{name}-site",
            PrivateBucketArgs(
                settings=settings,
                bucket=f"{prefix}-frontend-{settings.aws.account_id}",
                noncurrent_days=30,
                service="frontend",
                own_policy=False,
            ),
            opts=child,
        )
        access = aws.cloudfront.OriginAccessControl(
            f"{name}-oac",
            aws.cloudfront.OriginAccessControlArgs(
                name=f"{prefix}-frontend",
                description="CloudFront signs every request to the site bucket",
                origin_access_control_origin_type="s3",
                signing_behavior="always",
                signing_protocol="sigv4",
            ),
            opts=child,
        )
        origin_id = "site"
        distribution = aws.cloudfront.Distribution(
            f"{name}-cdn",
            aws.cloudfront.DistributionArgs(
                enabled=True,
                comment=f"billing {settings.name} frontend",
                default_root_object="index.html",
                http_version="http2and3",
                is_ipv6_enabled=True,
                price_class="PriceClass_100",
                origins=[
                    aws.cloudfront.DistributionOriginArgs(
                        origin_id=origin_id,
                        domain_name=site.regional_domain_name,
                        origin_access_control_id=access.id,
                    )
                ],
                default_cache_behavior=aws.cloudfront.DistributionDefaultCacheBehaviorArgs(
                    target_origin_id=origin_id,
                    viewer_protocol_policy="redirect-to-https",
                    allowed_methods=["GET", "HEAD", "OPTIONS"],
                    cached_methods=["GET", "HEAD"],
                    compress=True,
                    cache_policy_id=CACHING_OPTIMIZED,
                    response_headers_policy_id=SECURITY_HEADERS,
                ),
                custom_error_responses=[
                    aws.cloudfront.DistributionCustomErrorResponseArgs(
                        error_code=code,
                        response_code=200,
                        response_page_path="/index.html",
                        error_caching_min_ttl=10,
                    )
                    for code in SPA_ERRORS
                ],
                restrictions=aws.cloudfront.DistributionRestrictionsArgs(
                    geo_restriction=aws.cloudfront.DistributionRestrictionsGeoRestrictionArgs(
                        restriction_type="none"
                    )
                ),
                viewer_certificate=aws.cloudfront.DistributionViewerCertificateArgs(
                    cloudfront_default_certificate=True
                ),
                tags=tags(settings, "frontend"),
            ),
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-site-policy",
            aws.s3.BucketPolicyArgs(
                bucket=site.bucket_id,
                policy=pulumi.Output.all(site.arn, distribution.arn).apply(
                    lambda values: json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                deny_insecure_transport(values[0]),
                                {
                                    "Sid": "CloudFrontReads",
                                    "Effect": "Allow",
                                    "Principal": {"Service": "cloudfront.amazonaws.com"},
                                    "Action": "s3:GetObject",
                                    "Resource": f"{values[0]}/*",
                                    "Condition": {"StringEquals": {"AWS:SourceArn": values[1]}},
                                },
                            ],
                        }
                    )
                ),
            ),
            opts=child,
        )

        # The site's files, each with its content type: the deploy that changes them uploads them.
        self.serves_content = args.site_dir is not None
        for path in site_files(args.site_dir) if args.site_dir is not None else []:
            key = path.relative_to(args.site_dir).as_posix()  # type: ignore[arg-type]
            aws.s3.BucketObject(
                f"{name}-file-{key}",
                aws.s3.BucketObjectArgs(
                    bucket=site.bucket_id,
                    key=key,
                    source=pulumi.FileAsset(str(path)),
                    content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                    # index.html must be revalidated so a release shows at once; assets are
                    # content-hashed by the build and may be cached.
                    cache_control="no-cache" if key == "index.html" else "max-age=31536000",
                ),
                opts=child,
            )

        self.bucket_name = site.bucket_name
        self.distribution_id = distribution.id
        self.domain_name = distribution.domain_name
        self.register_outputs(
            {
                "bucket_name": self.bucket_name,
                "distribution_id": self.distribution_id,
                "domain_name": self.domain_name,
            }
        )
