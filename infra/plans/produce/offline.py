"""Offline preview: run a stack program in-process under the Pulumi SDK's mock runtime."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping

import pulumi
from pulumi.runtime import mocks, settings, stack
from pulumi.runtime.sync_await import _sync_await

from infra.errors import InfraError
from infra.manifests import ServiceManifest
from infra.plans.produce.mocks import RecordingMonitor, Target, UnansweredInvokeError
from infra.plans.read.model import Plan
from infra.settings import Cloud, EnvironmentSettings
from infra.stack import rendering

PROJECTS = {Cloud.AWS: "billing-aws", Cloud.GCP: "billing-gcp"}


class RenderError(InfraError):
    """A stack program that failed under the mock runtime."""


def target_of(env: EnvironmentSettings, cloud: Cloud) -> Target:
    if cloud is Cloud.AWS and env.aws is not None:
        return Target(env.name, cloud.value, env.aws.region, env.aws.account_id)
    if cloud is Cloud.GCP and env.gcp is not None:
        return Target(env.name, cloud.value, env.gcp.region, env.gcp.project)
    raise RenderError(f"{env.name} does not target {cloud.value}")


def program_for(cloud: Cloud) -> Callable[[], None]:
    module = importlib.import_module(f"infra.{cloud.value}.program")
    main: Callable[[], None] = module.main
    return main


def _root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UnansweredInvokeError):
            return exc
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def _current_loop() -> asyncio.AbstractEventLoop:
    """The thread's event loop, which the SDK's runtime takes (asyncio.get_event_loop()); a new
    one if there is none or it is closed, as after asyncio.run in this thread (which closes its
    loop and sets none: https://docs.python.org/3.11/library/asyncio-runner.html#asyncio.run)."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def _cancel_pending() -> None:
    loop = asyncio.get_event_loop()
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def render(
    env: EnvironmentSettings,
    cloud: Cloud,
    services: Mapping[str, ServiceManifest] | None = None,
) -> Plan:
    """Render one stack's resources to a plan without the CLI, credentials or network.

    The program deploys ``env`` as given (not as environments/ holds it) and ``services``
    (default: the manifests under services/).
    """
    _current_loop()
    monitor = RecordingMonitor(target_of(env, cloud))
    project = PROJECTS[cloud]
    # Each stack starts from a clean runtime: a new root Stack resource and a new monitor.
    settings.ROOT.set(None)
    mocks.set_mocks(
        monitor.offline_mocks, project=project, stack=env.name, preview=True, monitor=monitor
    )
    # As pulumi.runtime.test does: outstanding outputs of an earlier (failed) stack are dropped.
    settings.SETTINGS.outputs.clear()
    program = program_for(cloud)
    try:
        with rendering(env, services):
            _sync_await(stack.run_pulumi_func(program))
        root = settings.get_root_resource()
        outputs = {}
        if root is not None:
            for key, value in sorted(getattr(root, "outputs", {}).items()):
                output = pulumi.Output.from_input(value)
                secret = _sync_await(output.is_secret())
                outputs[key] = "[secret]" if secret else _sync_await(output.future())
    except Exception as exc:
        cause = _root_cause(exc)
        raise RenderError(f"{env.name}-{cloud.value}: {type(cause).__name__}: {cause}") from exc
    finally:
        settings.ROOT.set(None)
        # Nothing a failed program left pending may run inside the next stack.
        _cancel_pending()
    return Plan(
        environment=env.name,
        cloud=cloud.value,
        stack=f"{project}/{env.name}",
        mode="offline",
        resources=sorted(monitor.recorded, key=lambda r: r.urn),
        outputs=outputs,
    )
