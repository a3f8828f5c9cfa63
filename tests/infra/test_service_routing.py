"""Many services (seed 004): each a folder with a manifest naming its route; path rules with
stable priorities and a target group per public service on AWS, Cloud Map names for internal
ones; URL-map path matchers and a backend per public service on GCP; sizing per service."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from infra.manifests import Route, ServiceManifest, load_manifest, manifests
from infra.plans.produce.offline import render
from infra.plans.read.model import Plan, Resource
from infra.settings import Cloud, EnvironmentSettings, SettingsError, load_environment

FIXTURE = Path(__file__).parent / "data" / "services-004"
# Seed 004's routing table.
ROUTES = {
    "presentation": (3900, "/presentation/*"),
    "client-tier": (3901, "/client/*"),
    "management-tier": (3902, "/management/*"),
    "uex-backend": (3903, "/api/uex/*"),
    "processing-tier": (8900, "/api/processing/*"),
    "management-backend": (9000, "/api/mgmt/*"),
}
# Production sizing per service (seed 004: "2 vCPU, 4GB" for the heavy tiers).
PRODUCTION = {
    "processing-tier": "min_tasks = 3\nmax_tasks = 12\ncpu = 2048\nmemory = 4096",
    "uex-backend": "min_tasks = 2\nmax_tasks = 10\ncpu = 2048\nmemory = 4096",
}


def _without_services(text: str) -> str:
    """A settings file without its [services.*] tables."""
    return re.sub(r"(?ms)^\[services\.[^\]]+\]\n.*?(?=^\[|\Z)", "", text)


def fixture_environment(
    tmp: Path, name: str, services: dict[str, ServiceManifest]
) -> EnvironmentSettings:
    environments = tmp / "environments"
    shutil.copytree(Path(__file__).parents[2] / "environments", environments)
    defaults = environments / "defaults.toml"
    tables = "".join(f"\n[services.{s}]\nmin_tasks = 1\nmax_tasks = 4\n" for s in sorted(services))
    defaults.write_text(_without_services(defaults.read_text()) + tables)
    for env in ("dev", "staging", "production"):
        settings = environments / env / "settings.toml"
        extra = "".join(f"\n[services.{s}]\n{v}\n" for s, v in PRODUCTION.items() if s in services)
        text = _without_services(settings.read_text())
        settings.write_text(text + (extra if env == "production" else ""))
        pins = environments / env / "pins.toml"
        images = "".join(
            f'"{s}" = "ghcr.io/example-org/billing-{s}:0.1.0"\n' for s in sorted(services)
        )
        pins.write_text(pins.read_text().split("[images]")[0] + "[images]\n" + images)
    return load_environment(name, environments, services=sorted(services))


@pytest.fixture(scope="module")
def services() -> dict[str, ServiceManifest]:
    return manifests(FIXTURE)


@pytest.fixture(scope="module")
def plans(
    services: dict[str, ServiceManifest], tmp_path_factory: pytest.TempPathFactory
) -> dict[Cloud, Plan]:
    env = fixture_environment(tmp_path_factory.mktemp("env"), "production", services)
    return {cloud: render(env, cloud, services) for cloud in Cloud}


def named(plan: Plan, type_: str, name: str) -> Resource:
    [found] = [r for r in plan.of_type(type_) if r.name == name]
    return found


def test_the_fixture_is_shaped_like_seed_004(services: dict[str, ServiceManifest]) -> None:
    assert {n: (m.port, m.paths) for n, m in services.items()} == {
        n: (port, [path]) for n, (port, path) in ROUTES.items()
    }


def test_aws_routes_each_prefix_to_its_own_target_group(
    plans: dict[Cloud, Plan], services: dict[str, ServiceManifest]
) -> None:
    plan = plans[Cloud.AWS]
    groups = {
        r.name.removeprefix("edge-").removesuffix("-tg"): r
        for r in plan.of_type("aws:lb/targetGroup:TargetGroup")
        if not r.name.endswith("-alt")
    }
    assert {s: g.inputs["port"] for s, g in groups.items()} == {
        s: p for s, (p, _) in ROUTES.items()
    }
    rules = plan.of_type("aws:lb/listenerRule:ListenerRule")
    assert len(rules) == 6
    by_service = {r.name.removeprefix("edge-").removesuffix("-route"): r for r in rules}
    for service, rule in by_service.items():
        assert rule.inputs["priority"] == services[service].priority
        [condition] = rule.inputs["conditions"]
        assert condition["pathPattern"]["values"] == [ROUTES[service][1]]
        [action] = rule.inputs["actions"]
        assert action["type"] == "forward"
        assert groups[service].urn in rule.dependencies
    assert len({r.inputs["priority"] for r in rules}) == 6
    # No service takes the default route: the listener answers what no rule claims with 404.
    listener = named(plan, "aws:lb/listener:Listener", "edge-https")
    [default] = listener.inputs["defaultActions"]
    assert default["type"] == "fixed-response"
    assert default["fixedResponse"]["statusCode"] == "404"
    # Every ECS service waits for its own rule: ECS refuses a target group not yet attached.
    for service in ROUTES:
        ecs = named(plan, "aws:ecs/service:Service", f"compute-{service}-service")
        assert by_service[service].urn in ecs.dependencies
        [balancer] = ecs.inputs["loadBalancers"]
        assert balancer["containerPort"] == ROUTES[service][0]
        # Production releases blue/green: each service shifts its own rule to its second group.
        advanced = balancer["advancedConfiguration"]
        assert f"/edge-{service}-route-" in advanced["productionListenerRule"]
        assert f"/edge-{service}-tg-alt-" in advanced["alternateTargetGroupArn"]


def test_priorities_are_stable_when_services_come_and_go(
    services: dict[str, ServiceManifest], tmp_path: Path
) -> None:
    fewer = {n: m for n, m in services.items() if n != "client-tier"}
    env = fixture_environment(tmp_path, "dev", fewer)
    plan = render(env, Cloud.AWS, fewer)
    for rule in plan.of_type("aws:lb/listenerRule:ListenerRule"):
        service = rule.name.removeprefix("edge-").removesuffix("-route")
        assert rule.inputs["priority"] == services[service].priority


def test_each_service_is_sized_and_scaled_from_its_manifest_and_the_environment(
    plans: dict[Cloud, Plan], services: dict[str, ServiceManifest]
) -> None:
    plan = plans[Cloud.AWS]
    for service, manifest in services.items():
        task = named(plan, "aws:ecs/taskDefinition:TaskDefinition", f"compute-{service}-task")
        target = named(plan, "aws:appautoscaling/target:Target", f"compute-{service}-scaling")
        if service == "processing-tier":
            assert (task.inputs["cpu"], task.inputs["memory"]) == ("2048", "4096")
            assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (3, 12)
        elif service == "uex-backend":
            assert (task.inputs["cpu"], task.inputs["memory"]) == ("2048", "4096")
        else:  # the manifest's own size, the defaults' scaling
            assert (task.inputs["cpu"], task.inputs["memory"]) == (
                str(manifest.cpu),
                str(manifest.memory),
            )
            assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (1, 4)
        [container] = json.loads(task.inputs["containerDefinitions"])
        assert container["portMappings"] == [{"containerPort": manifest.port, "protocol": "tcp"}]
    gcp = plans[Cloud.GCP]
    run = named(gcp, "gcp:cloudrunv2/service:Service", "workloads-processing-tier")
    limits = run.inputs["template"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": "4096Mi"}
    assert run.inputs["template"]["scaling"]["maxInstanceCount"] == 12


def test_gcp_url_map_has_a_path_matcher_and_a_backend_per_public_service(
    plans: dict[Cloud, Plan], services: dict[str, ServiceManifest]
) -> None:
    plan = plans[Cloud.GCP]
    backends = plan.of_type("gcp:compute/backendService:BackendService")
    assert len(backends) == 6
    assert all(b.inputs["securityPolicy"] for b in backends)
    negs = plan.of_type("gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup")
    assert {n.inputs["cloudRun"]["service"] for n in negs} == {
        f"billing-production-{s}" for s in ROUTES
    }
    url_map = named(plan, "gcp:compute/uRLMap:URLMap", "edge-url-map").inputs
    assert url_map["hostRules"] == [{"hosts": ["*"], "pathMatcher": "services"}]
    [matcher] = url_map["pathMatchers"]
    routed = {tuple(rule["paths"]) for rule in matcher["pathRules"]}
    first = min(services.values(), key=lambda m: m.priority)
    # The first-ranked service is the default backend; every other prefix has a rule.
    assert routed == {(p,) for s, (_, p) in ROUTES.items() if s != first.name}


def test_internal_services_get_cloud_map_names_and_no_route(
    services: dict[str, ServiceManifest], tmp_path: Path
) -> None:
    internal = dict(services)
    route = Route(internal=True)
    internal["processing-tier"] = services["processing-tier"].model_copy(
        update={"public": False, "route": route}
    )
    env = fixture_environment(tmp_path, "staging", internal)
    plan = render(env, Cloud.AWS, internal)
    [namespace] = plan.of_type("aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace")
    assert namespace.inputs["name"] == "billing-staging.internal"
    [entry] = plan.of_type("aws:servicediscovery/service:Service")
    assert entry.inputs["name"] == "processing-tier"
    ecs = named(plan, "aws:ecs/service:Service", "compute-processing-tier-service")
    assert "loadBalancers" not in ecs.inputs
    # A single nested block: the provider takes it as one object.
    assert ecs.inputs["serviceRegistries"]["registryArn"]
    assert entry.urn in ecs.dependencies
    assert len(plan.of_type("aws:lb/listenerRule:ListenerRule")) == 5
    assert plan.outputs["internal_service_names"] == {
        "processing-tier": "processing-tier.billing-staging.internal"
    }
    group = named(plan, "aws:ec2/securityGroup:SecurityGroup", "firewall-service-processing-tier")
    [ingress] = group.inputs["ingress"]
    assert ingress["fromPort"] == 8900
    assert ingress["cidrBlocks"]


def test_the_shipped_services_keep_their_default_route() -> None:
    from infra.settings import environment

    plan = render(environment("dev"), Cloud.AWS)
    assert plan.of_type("aws:lb/listenerRule:ListenerRule") == []
    [default] = named(plan, "aws:lb/listener:Listener", "edge-https").inputs["defaultActions"]
    assert default["type"] == "forward"
    assert not plan.of_type("aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace")


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("public = true\n", "public = false\n", "route.paths", "only a public service"),
        ("[route]\n", "[route]\ninternal = true\n", "route.internal", "not public"),
        ('paths = ["/presentation/*"]', 'paths = ["presentation"]', "route.paths[0]", "pattern"),
    ],
)
def test_bad_routes_name_the_manifest_and_key(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    folder = tmp_path / "presentation"
    folder.mkdir()
    text = (FIXTURE / "presentation" / "manifest.toml").read_text()
    (folder / "manifest.toml").write_text(text.replace(old, new))
    with pytest.raises(SettingsError) as error:
        load_manifest(folder / "manifest.toml")
    assert error.value.file.endswith("presentation/manifest.toml")
    assert error.value.key == key
    assert message in error.value.message


def test_two_services_on_one_priority_are_refused(tmp_path: Path) -> None:
    for name in ("presentation", "client-tier"):
        (tmp_path / name).mkdir()
        text = (FIXTURE / name / "manifest.toml").read_text()
        (tmp_path / name / "manifest.toml").write_text(
            text.replace("[route]\n", "[route]\npriority = 7\n")
        )
    with pytest.raises(SettingsError) as error:
        manifests(tmp_path)
    assert error.value.key == "route.priority"
    assert "7 is client-tier's" in error.value.message
