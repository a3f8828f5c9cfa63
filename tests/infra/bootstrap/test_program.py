"""The bootstrap programs, rendered offline: state, secrets key, OIDC trust per environment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infra.bootstrap.program import render
from infra.plans.read.model import Plan, Resource
from infra.settings import ENVIRONMENTS_DIR, Cloud, SettingsError, environment, load_environment

REPOSITORY = "example-org/billing-platform"
# pulumi_aws warns, when its s3 module first loads, about the V2 classes this code never uses.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.s3")


@pytest.fixture(scope="module")
def aws_plan() -> Plan:
    return render(environment("production"), Cloud.AWS)


@pytest.fixture(scope="module")
def gcp_plan() -> Plan:
    return render(environment("production"), Cloud.GCP)


def one(plan: Plan, type_: str, name: str) -> Resource:
    found = [r for r in plan.resources if r.type == type_ and r.name == name]
    assert len(found) == 1, f"{type_} {name}"
    return found[0]


def test_state_bucket_and_key_match_the_environment_settings(aws_plan: Plan) -> None:
    bucket = one(aws_plan, "aws:s3/bucket:Bucket", "bootstrap-state")
    # As environments/production/settings.toml names them in [pulumi].
    assert bucket.inputs["bucket"] == "example-billing-pulumi-state-production"
    assert bucket.protect
    key = one(aws_plan, "aws:kms/key:Key", "bootstrap-secrets-key")
    assert key.protect
    assert key.inputs["enableKeyRotation"] is True
    alias = one(aws_plan, "aws:kms/alias:Alias", "bootstrap-secrets-alias")
    assert alias.inputs["name"] == "alias/billing-pulumi-production"
    block = one(
        aws_plan,
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "bootstrap-state-public-access",
    )
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert all(block.inputs[k] is True for k in flags)


@pytest.mark.parametrize(
    ("role", "github_environment", "policy"),
    [
        ("preview", "preview-production", "arn:aws:iam::aws:policy/ReadOnlyAccess"),
        ("deploy", "production", "arn:aws:iam::aws:policy/AdministratorAccess"),
    ],
)
def test_roles_trust_only_the_repository_and_github_environment(
    aws_plan: Plan, role: str, github_environment: str, policy: str
) -> None:
    created = one(aws_plan, "aws:iam/role:Role", f"bootstrap-{role}-role")
    assert created.inputs["name"] == f"billing-production-{role}"
    trust = json.loads(created.inputs["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert ":openidconnectprovider/bootstrap-github-oidc" in statement["Principal"]["Federated"]
    assert statement["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": (
                f"repo:{REPOSITORY}:environment:{github_environment}"
            ),
        }
    }
    attached = one(
        aws_plan, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", f"bootstrap-{role}-policy"
    )
    assert attached.inputs["policyArn"] == policy


def test_only_the_deploy_role_writes_state(aws_plan: Plan) -> None:
    preview = json.loads(
        one(aws_plan, "aws:iam/rolePolicy:RolePolicy", "bootstrap-preview-state").inputs["policy"]
    )
    deploy = json.loads(
        one(aws_plan, "aws:iam/rolePolicy:RolePolicy", "bootstrap-deploy-state").inputs["policy"]
    )
    assert "s3:PutObject" not in preview["Statement"][0]["Action"]
    # Decrypt to read; a data key for the lock files it writes (no kms:Encrypt).
    assert preview["Statement"][1]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert "s3:PutObject" in deploy["Statement"][0]["Action"]
    oidc = one(
        aws_plan, "aws:iam/openIdConnectProvider:OpenIdConnectProvider", "bootstrap-github-oidc"
    )
    assert oidc.inputs["url"] == "https://token.actions.githubusercontent.com"
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]


def test_gcp_federation_pins_repository_and_environment(gcp_plan: Plan) -> None:
    provider = one(
        gcp_plan,
        "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider",
        "bootstrap-github-provider",
    )
    assert provider.inputs["attributeCondition"] == f"assertion.repository == '{REPOSITORY}'"
    assert provider.inputs["oidc"]["issuerUri"] == "https://token.actions.githubusercontent.com"
    members = {
        r.name: r.inputs
        for r in gcp_plan.resources
        if r.type == "gcp:serviceaccount/iAMMember:IAMMember"
    }
    assert members["bootstrap-preview-federation"]["member"].endswith(
        "/attribute.environment/preview-production"
    )
    assert members["bootstrap-deploy-federation"]["member"].endswith(
        "/attribute.environment/production"
    )
    assert all(m["role"] == "roles/iam.workloadIdentityUser" for m in members.values())
    bindings = [
        r.inputs for r in gcp_plan.resources if r.type == "gcp:projects/iAMMember:IAMMember"
    ]
    granted = sorted((b["member"].split("@")[0], b["role"]) for b in bindings)
    assert ("serviceAccount:billing-production-preview", "roles/viewer") in granted
    assert not [g for g in granted if g[0].endswith("preview") and g[1] == "roles/editor"]
    # The GCP stacks' state and secrets key live in GCP, as settings [pulumi.gcp] names them.
    bucket = one(gcp_plan, "gcp:storage/bucket:Bucket", "bootstrap-state")
    assert bucket.inputs["name"] == "example-billing-pulumi-state-production-gcp"
    assert bucket.protect
    key = one(gcp_plan, "gcp:kms/cryptoKey:CryptoKey", "bootstrap-secrets-key")
    assert key.inputs["name"] == "pulumi-production"
    assert key.protect


def test_preview_role_writes_locks_and_reads_what_drift_refreshes(aws_plan: Plan) -> None:
    preview = json.loads(
        one(aws_plan, "aws:iam/rolePolicy:RolePolicy", "bootstrap-preview-state").inputs["policy"]
    )
    kms = next(s for s in preview["Statement"] if any(a.startswith("kms:") for a in s["Action"]))
    assert set(kms["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    locks = [s for s in preview["Statement"] if "s3:PutObject" in s["Action"]]
    assert locks == [
        {
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": locks[0]["Resource"],
        }
    ]
    assert str(locks[0]["Resource"]).endswith("/.pulumi/locks/*")
    reads = json.loads(
        one(aws_plan, "aws:iam/rolePolicy:RolePolicy", "bootstrap-preview-drift-reads").inputs[
            "policy"
        ]
    )
    secrets, decrypt = reads["Statement"]
    assert secrets["Action"] == ["secretsmanager:GetSecretValue"]
    assert secrets["Resource"].endswith(":secret:billing/production/*")
    assert decrypt["Condition"]["StringEquals"]["kms:ViaService"].startswith("secretsmanager.")


def test_deploy_sessions_outlast_the_longest_first_deploy(aws_plan: Plan) -> None:
    deploy = one(aws_plan, "aws:iam/role:Role", "bootstrap-deploy-role")
    preview = one(aws_plan, "aws:iam/role:Role", "bootstrap-preview-role")
    assert deploy.inputs["maxSessionDuration"] == 4 * 3600
    assert preview.inputs["maxSessionDuration"] == 3600


def test_gcp_preview_account_reads_secret_values_for_drift(gcp_plan: Plan) -> None:
    bindings = [
        r.inputs for r in gcp_plan.resources if r.type == "gcp:projects/iAMMember:IAMMember"
    ]
    assert any(
        b["role"] == "roles/secretmanager.secretAccessor"
        and "billing-production-preview" in b["member"]
        for b in bindings
    )


def test_deploy_job_asks_for_the_session_and_releases_a_failed_deploy() -> None:
    import yaml

    from infra.bootstrap.aws import DEPLOY_SESSION_SECONDS
    from infra.settings import REPO_ROOT

    workflow = yaml.safe_load((REPO_ROOT / ".github/workflows/deploy.yml").read_text())
    job = workflow["jobs"]["up"]
    assert job["timeout-minutes"] * 60 < DEPLOY_SESSION_SECONDS
    steps = job["steps"]
    aws = next(s for s in steps if "configure-aws-credentials" in s.get("uses", ""))
    assert aws["with"]["role-duration-seconds"] == DEPLOY_SESSION_SECONDS
    release = next(s for s in steps if "nox -s release" in s.get("run", ""))
    assert release["if"] == "failure() || cancelled()"
    assert "nox -s release" in release["run"]


ENVIRONMENT = "github:index/repositoryEnvironment:RepositoryEnvironment"
BRANCH_POLICY = (
    "github:index/repositoryEnvironmentDeploymentPolicy:RepositoryEnvironmentDeploymentPolicy"
)
IDENTIFIER = "github:index/actionsEnvironmentSecret:ActionsEnvironmentSecret"


def _identifiers(plan: Plan) -> dict[tuple[str, str], Resource]:
    return {
        (r.inputs["environment"], r.inputs["secretName"]): r
        for r in plan.resources
        if r.type == IDENTIFIER
    }


def _from(resource: Resource, plan: Plan) -> set[str]:
    """The names of the resources ``resource``'s value comes from."""
    return {urn.split("::")[-1] for urn in resource.dependencies} & {r.name for r in plan.resources}


def test_production_deploys_only_from_its_branch_after_another_persons_approval(
    aws_plan: Plan,
) -> None:
    production = one(aws_plan, ENVIRONMENT, "github-production")
    assert production.inputs["repository"] == "billing-platform"
    assert production.inputs["deploymentBranchPolicy"] == {
        "protectedBranches": False,
        "customBranchPolicies": True,
    }
    (reviewers,) = production.inputs["reviewers"]
    assert len(reviewers["teams"]) == 1  # settings: github.reviewers = ["billing-platform-leads"]
    assert all(isinstance(team, int) for team in reviewers["teams"])
    assert production.inputs["preventSelfReview"] is True
    assert production.inputs["canAdminsBypass"] is False
    (policy,) = [r for r in aws_plan.resources if r.type == BRANCH_POLICY]
    assert policy.inputs["branchPattern"] == "production"
    assert policy.inputs["environment"] == "production"
    # The read-only role's environment exists too, without reviewers.
    assert "reviewers" not in one(aws_plan, ENVIRONMENT, "github-preview-production").inputs


def test_dev_deploys_only_from_dev_without_reviewers() -> None:
    plan = render(environment("dev"), Cloud.AWS)
    dev = one(plan, ENVIRONMENT, "github-dev")
    assert dev.inputs["deploymentBranchPolicy"]["customBranchPolicies"] is True
    assert "reviewers" not in dev.inputs
    (policy,) = [r for r in plan.resources if r.type == BRANCH_POLICY]
    assert policy.inputs["branchPattern"] == "dev"


def test_each_github_environment_gets_its_own_roles(aws_plan: Plan, gcp_plan: Plan) -> None:
    aws = _identifiers(aws_plan)
    assert set(aws) == {
        ("preview-production", "AWS_PREVIEW_ROLE_ARN"),
        ("preview-production", "AWS_REGION"),
        ("production", "AWS_DEPLOY_ROLE_ARN"),
        ("production", "AWS_REGION"),
    }
    assert "bootstrap-deploy-role" in _from(aws[("production", "AWS_DEPLOY_ROLE_ARN")], aws_plan)
    preview_from = _from(aws[("preview-production", "AWS_PREVIEW_ROLE_ARN")], aws_plan)
    assert "bootstrap-preview-role" in preview_from
    assert "bootstrap-deploy-role" not in preview_from
    gcp = _identifiers(gcp_plan)
    assert set(gcp) == {
        ("preview-production", "GCP_WORKLOAD_IDENTITY_PROVIDER"),
        ("preview-production", "GCP_PREVIEW_SERVICE_ACCOUNT"),
        ("production", "GCP_WORKLOAD_IDENTITY_PROVIDER"),
        ("production", "GCP_DEPLOY_SERVICE_ACCOUNT"),
    }
    deploy_from = _from(gcp[("production", "GCP_DEPLOY_SERVICE_ACCOUNT")], gcp_plan)
    assert "bootstrap-deploy-account" in deploy_from
    assert "bootstrap-preview-account" not in deploy_from
    # The first cloud's bootstrap owns the environments; the other adds its identifiers only.
    assert not [r for r in gcp_plan.resources if r.type in (ENVIRONMENT, BRANCH_POLICY)]


def test_workflows_log_in_with_the_identifiers_bootstrap_sets(
    aws_plan: Plan, gcp_plan: Plan
) -> None:
    import re

    from infra.settings import REPO_ROOT

    set_by_bootstrap = {name for _, name in [*_identifiers(aws_plan), *_identifiers(gcp_plan)]}
    used: set[str] = set()
    for path in (REPO_ROOT / ".github" / "workflows").glob("*.yml"):
        used |= set(re.findall(r"secrets\.((?:AWS|GCP)_[A-Z_]+)", path.read_text()))
    assert used == set_by_bootstrap


def test_production_without_reviewers_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, root)
    settings = root / "production" / "settings.toml"
    text = settings.read_text()
    settings.write_text(text.replace('reviewers = ["billing-platform-leads"]', "reviewers = []"))
    with pytest.raises(SettingsError) as raised:
        load_environment("production", root)
    assert raised.value.key == "github.reviewers"
    assert raised.value.file.endswith("production/settings.toml")


def test_gcp_accounts_reach_state_and_key_as_their_role_needs(gcp_plan: Plan) -> None:
    bucket_roles = {
        r.name: r.inputs
        for r in gcp_plan.resources
        if r.type == "gcp:storage/bucketIAMMember:BucketIAMMember"
    }
    assert bucket_roles["bootstrap-preview-state"]["role"] == "roles/storage.objectViewer"
    assert bucket_roles["bootstrap-deploy-state"]["role"] == "roles/storage.objectAdmin"
    locks = bucket_roles["bootstrap-preview-state-locks"]
    assert locks["role"] == "roles/storage.objectUser"
    assert locks["condition"]["expression"] == (
        'resource.name.startsWith("projects/_/buckets/example-billing-pulumi-state-production-gcp'
        '/objects/.pulumi/locks/")'
    )
    key_roles = {
        r.name: r.inputs["role"]
        for r in gcp_plan.resources
        if r.type == "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
    }
    assert key_roles == {
        "bootstrap-preview-secrets-key": "roles/cloudkms.cryptoKeyDecrypter",
        "bootstrap-deploy-secrets-key": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
    }
