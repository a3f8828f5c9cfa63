"""AWS certificate: the API's ACM certificate, validated through DNS in the environment's zone.

No certificate ARN is configured anywhere: the stack requests the certificate for
``aws.domain``, writes ACM's validation CNAME into ``aws.hosted_zone_id`` and waits for ACM to
issue it before the HTTPS listener uses it. An HTTPS listener created with a certificate that is
still PENDING_VALIDATION fails with "UnsupportedCertificate"
(https://docs.aws.amazon.com/acm/latest/userguide/dns-validation.html; the waiting resource is
``aws_acm_certificate_validation``,
hashicorp/terraform-provider-aws website/docs/r/acm_certificate_validation.html.markdown).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import EnvironmentSettings
from infra.tagging import tags

# Seconds a validation record is cached; ACM rechecks it at renewal too, so it stays.
VALIDATION_TTL = 300


@dataclass(frozen=True)
class CertificateArgs:
    settings: EnvironmentSettings
    domain: str
    hosted_zone_id: str


class Certificate(pulumi.ComponentResource):
    """An ACM certificate for the domain, issued once its DNS validation record resolves."""

    # The ARN of the *issued* certificate: it resolves only after validation succeeded.
    certificate_arn: pulumi.Output[str]
    validation: aws.acm.CertificateValidation

    def __init__(
        self, name: str, args: CertificateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Certificate", name, None, opts)
        settings = args.settings
        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            aws.acm.CertificateArgs(
                domain_name=args.domain,
                validation_method="DNS",
                key_algorithm="EC_prime256v1",
                tags=tags(settings),
            ),
            # A new certificate (another domain) is issued before the listener lets go of the
            # old one: ACM refuses to delete a certificate that is in use.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=False),
        )
        option = certificate.domain_validation_options[0]
        record = aws.route53.Record(
            f"{name}-validation",
            aws.route53.RecordArgs(
                zone_id=args.hosted_zone_id,
                name=option.resource_record_name,
                type=option.resource_record_type,
                records=[option.resource_record_value],
                ttl=VALIDATION_TTL,
                # ACM gives the same record for a re-created certificate of the same domain.
                allow_overwrite=True,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.validation = aws.acm.CertificateValidation(
            f"{name}-validated",
            aws.acm.CertificateValidationArgs(
                certificate_arn=certificate.arn, validation_record_fqdns=[record.fqdn]
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.certificate_arn = self.validation.certificate_arn
        self.register_outputs({"certificate_arn": self.certificate_arn})
