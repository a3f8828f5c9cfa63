"""GitHub Actions OIDC facts shared by both clouds' bootstrap programs."""

from __future__ import annotations

from urllib.parse import urlparse

GITHUB_OIDC_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"


def preview_environment(env: str) -> str:
    """The GitHub environment whose jobs get the read-only role (preview, plan, drift)."""
    return f"preview-{env}"


def subject(repository: str, github_environment: str) -> str:
    """The OIDC subject of a job that runs in ``github_environment`` of ``repository``."""
    return f"repo:{repository}:environment:{github_environment}"


def backend_bucket(backend_url: str) -> tuple[str, str] | None:
    """(scheme, bucket) of an s3:// or gs:// Pulumi backend URL, else None."""
    parsed = urlparse(backend_url)
    if parsed.scheme in {"s3", "gs"} and parsed.netloc:
        return parsed.scheme, parsed.netloc
    return None


def kms_alias(secrets_provider: str) -> str | None:
    """The alias name of an awskms://alias/<name> secrets provider, else None."""
    parsed = urlparse(secrets_provider)
    if parsed.scheme == "awskms" and parsed.netloc == "alias":
        return parsed.path.lstrip("/") or None
    return None


def gcp_kms_key(secrets_provider: str) -> tuple[str, str, str] | None:
    """(location, key ring, key) of a gcpkms:// secrets provider, else None."""
    parsed = urlparse(secrets_provider)
    if parsed.scheme != "gcpkms":
        return None
    parts = f"{parsed.netloc}{parsed.path}".split("/")
    # projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>
    if len(parts) == 8 and parts[2] == "locations" and parts[4] == "keyRings":
        return parts[3], parts[5], parts[7]
    return None
