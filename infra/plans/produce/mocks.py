"""Offline answers for the Pulumi SDK's mock runtime.

The mocks stand in for the engine and the providers: they compute the outputs a provider
would assign (ids, ARNs, names, endpoints) so that dependency edges survive, answer the
invokes the programs use, and fail loudly, naming the token, on any invoke nobody answers.
Every value derives from the URN, so the same program gives byte-identical plans.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from pulumi.runtime import mocks
from pulumi.runtime.settings import get_project, get_stack

from infra.plans.read.formats import STACK_TYPE, Urn, redact, secret
from infra.plans.read.model import Resource


class UnansweredInvokeError(Exception):
    """An invoke the offline runtime has no answer for."""

    def __init__(self, token: str) -> None:
        super().__init__(
            f"offline preview has no answer for invoke '{token}': "
            "add one to infra/plans/produce/mocks.py"
        )
        self.token = token


@dataclass(frozen=True)
class Target:
    """Where the rendered stack pretends to live."""

    environment: str
    cloud: str
    region: str
    account: str  # AWS account id or GCP project


def digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class NewResource:
    """What a computed-outputs function sees of a resource being created."""

    type: str
    name: str
    urn: str
    inputs: Mapping[str, Any]
    target: Target

    @property
    def physical_name(self) -> str:
        """The name a provider would give: the input name, or an auto-name from the URN."""
        given = self.inputs.get("name")
        return given if isinstance(given, str) else f"{self.name}-{digest(self.urn, 7)}"


Computed = Callable[[NewResource], dict[str, Any]]
Invoke = Callable[[Mapping[str, Any], Target], dict[str, Any]]

# Cloud modules register here: type token -> computed outputs; invoke token -> answer.
COMPUTED: dict[str, Computed] = {}
INVOKES: dict[str, Invoke] = {}
# Prefix for provider-assigned ids ("vpc-0a1b2c3d"); others get "<name>-<hash>".
ID_PREFIXES: dict[str, str] = {}


def _aws_arn(resource: NewResource) -> str:
    # aws:<module>/<kind>:<Kind> -> arn:aws:<module>:<region>:<account>:<kind>/<name>
    module, kind = resource.type.split(":")[1].split("/")
    return (
        f"arn:aws:{module}:{resource.target.region}:{resource.target.account}:"
        f"{kind.lower()}/{resource.physical_name}"
    )


def computed_outputs(resource: NewResource) -> tuple[str, dict[str, Any]]:
    """The id and output state for a new resource: its inputs plus provider-assigned values."""
    prefix = ID_PREFIXES.get(resource.type)
    resource_id = f"{prefix}-{digest(resource.urn, 17)}" if prefix else resource.physical_name
    state: dict[str, Any] = dict(resource.inputs)
    state.setdefault("name", resource.physical_name)
    if resource.type.startswith("aws:"):
        state.setdefault("arn", _aws_arn(resource))
    elif resource.type.startswith("gcp:"):
        project = resource.target.account
        state.setdefault("project", project)
        resource_id = (
            f"projects/{project}/{resource.type.split(':')[2].lower()}s/{resource.physical_name}"
        )
        state.setdefault("selfLink", f"https://www.googleapis.com/{resource_id}")
    extra = COMPUTED.get(resource.type)
    if extra is not None:
        state.update(extra(resource))
    # A cloud module may give the id the provider really assigns (a bucket's name, a secret's
    # path): rules that pair resources by id then see what a live preview shows.
    resource_id = str(state.get("id", resource_id))
    state["id"] = resource_id
    return resource_id, state


class OfflineMocks(mocks.Mocks):
    """Provider stand-ins for one stack."""

    def __init__(self, target: Target, monitor_urn: Callable[[str, str, str], str]) -> None:
        self.target = target
        self._urn = monitor_urn
        self._parents: dict[tuple[str, str], str] = {}
        self._secret_outputs: dict[tuple[str, str], list[str]] = {}

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        parent = self._parents.get((args.typ, args.name), "")
        urn = self._urn(parent, args.typ, args.name)
        if args.typ.startswith("pulumi:providers:"):
            return f"{args.name}-provider", dict(args.inputs)
        if not args.custom:
            return "", {}
        resource_id, state = computed_outputs(
            NewResource(args.typ, args.name, urn, args.inputs, self.target)
        )
        # The engine marks a resource's additionalSecretOutputs secret; so do the mocks.
        for key in self._secret_outputs.get((args.typ, args.name), []):
            if key in state:
                state[key] = secret(state[key])
        return resource_id, state

    def call(self, args: mocks.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        # A bare dict is the mock monitor's "no check failures" answer.
        answer = INVOKES.get(args.token)
        if answer is None:
            raise UnansweredInvokeError(args.token)
        return answer(args.args, self.target)


class RecordingMonitor(mocks.MockMonitor):
    """The SDK's mock monitor, also recording every registration as the engine receives it."""

    def __init__(self, target: Target) -> None:
        self.recorded: list[Resource] = []
        self.stack_outputs: dict[str, Any] = {}
        self.offline_mocks = OfflineMocks(target, self.make_urn)
        super().__init__(self.offline_mocks)

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        return str(Urn.of_child(get_stack(), get_project(), parent, type_, name))

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        # The mocks see only type and name; hand them the parent to build the same URN.
        key = (request.type, request.name)
        self.offline_mocks._parents[key] = request.parent  # noqa: SLF001
        self.offline_mocks._secret_outputs[key] = list(request.additionalSecretOutputs)  # noqa: SLF001
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        inputs = redact(json_format.MessageToDict(request.object))
        self.recorded.append(
            Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                protect=bool(request.protect),
                inputs=inputs,
                dependencies=sorted(set(request.dependencies)),
                custom=bool(request.custom),
                provider=request.provider,
            )
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        if Urn.parse(request.urn).qualified_type == STACK_TYPE:
            self.stack_outputs = redact(json_format.MessageToDict(request.outputs))
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


# Registers the clouds' computed outputs and invokes.
from infra.plans.produce import mocks_aws, mocks_gcp, mocks_github  # noqa: E402, F401


def _random_password(resource: NewResource) -> dict[str, Any]:
    # Deterministic, and never a real credential: the SDK marks `result` secret on its own.
    length = int(resource.inputs.get("length", 16))
    return {"result": ("offline-" + digest(resource.urn, 64))[:length], "bcryptHash": "offline"}


COMPUTED.update(
    {
        "random:index/randomPassword:RandomPassword": _random_password,
        "random:index/randomId:RandomId": lambda r: {
            "hex": digest(r.urn, 16),
            "b64Url": digest(r.urn, 11),
        },
    }
)
