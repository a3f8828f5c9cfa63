"""The API half of `python -m services.bench`: the API beside its floor, loaded by wrk.

The load generator is Debian's `wrk` in its own process (a Lua script sets the bearer token
and, for POST, a JSON body and a new Idempotency-Key per request). The API runs with its
container's command (services/api/manifest.toml, server processes included); the floor
(services/bench_floor.py) with the same server and process count. Each run reports the CPU
time of each side (server processes, wrk, PostgreSQL and Redis) and of the whole machine, so a
reader can see how the cores were shared, and what else was running on them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx

from infra.settings import server_processes
from services import devservers
from services.local import REPOSITORY_ROOT, load_manifest, local_stack, wait_for_health

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from services.local import LocalStack

Number = TypeVar("Number", int, float)
CUSTOMERS = 100
WARMUP_SECONDS = 2.0
# Far above what the benchmark sends, so it measures the API rather than 429s.
BENCH_RATE_LIMIT_PER_MINUTE = 1_000_000
NEW_CUSTOMER = {"email": "bench@example.com", "name": "Bench", "payment_method": "pm_card_visa"}
GET, POST = "GET /v1/customers/{id}", "POST /v1/customers"


@dataclass(frozen=True)
class Target:
    """What the API must do beside its floor at 64 connections (the README's Benchmark)."""

    max_p99_ms: float
    # Of the floor's requests a second, in the same round.
    min_throughput_share: float | None = None
    # Times the floor's p99, in the same round.
    max_p99_ratio: float | None = None

    def describe(self) -> str:
        p99 = f"p99 at most {self.max_p99_ms:g} ms"
        if self.max_p99_ratio is not None:
            p99 += f" and {self.max_p99_ratio:g}x the floor's"
        if self.min_throughput_share is None:
            return p99
        return f"at least {self.min_throughput_share:.0%} of the floor's requests/s; {p99}"


TARGETS = {
    GET: Target(max_p99_ms=50.0, min_throughput_share=0.5, max_p99_ratio=2.0),
    POST: Target(max_p99_ms=100.0),
}
_TICKS = os.sysconf("SC_CLK_TCK")

# wrk's Lua: https://github.com/wg/wrk/blob/master/SCRIPTING. Each thread has its own Lua
# state; setup() numbers them so idempotency keys never repeat across threads.
WRK_SCRIPT = """
local token = os.getenv("BENCH_TOKEN")
local run = os.getenv("BENCH_RUN")
local operation = os.getenv("BENCH_OPERATION")
local body = os.getenv("BENCH_BODY")
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local threads = 0
local sent = 0
wrk.headers["Authorization"] = "Bearer " .. token

function setup(thread)
  threads = threads + 1
  thread:set("number", threads)
end

function request()
  sent = sent + 1
  if operation == "POST" then
    -- A headers table replaces wrk.headers (wrk.format in wrk.lua), so it names them all.
    return wrk.format("POST", "/v1/customers", {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = "bench-" .. run .. "-" .. number .. "-" .. sent,
    }, body)
  end
  return wrk.format("GET", paths[(sent % #paths) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "microseconds": %d, "errors": %d, "p50": %d, "p99": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class CpuSeconds:
    """CPU time spent during one run, by side, and by the whole machine."""

    server: float
    load_generator: float
    database_and_cache: float
    machine: float
    wall: float

    @property
    def others(self) -> float:
        """Everything else on the machine: other people's work, for one."""
        return max(0.0, self.machine - self.server - self.load_generator - self.database_and_cache)


@dataclass(frozen=True)
class LoadResult:
    server: str
    operation: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu: CpuSeconds
    # wrk's connections held by each server process, most first.
    connections: tuple[int, ...]
    load_average: tuple[float, float]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class RoundOutcome:
    """One round's API run of an operation beside the floor's run of it before."""

    share: float  # of the floor's requests a second
    p99_ms: float
    p99_ratio: float  # to the floor's p99

    def meets(self, target: Target) -> bool:
        return (
            self.p99_ms <= target.max_p99_ms
            and (target.min_throughput_share is None or self.share >= target.min_throughput_share)
            and (target.max_p99_ratio is None or self.p99_ratio <= target.max_p99_ratio)
        )


def round_outcomes(results: list[LoadResult], operation: str) -> list[RoundOutcome]:
    """Each round's outcome for the operation: the runs alternate floor, API (_runs)."""
    floor = [r for r in results if r.operation == operation and r.server == "floor"]
    api = [r for r in results if r.operation == operation and r.server == "API"]
    return [
        RoundOutcome(a.per_second / f.per_second, a.p99_ms, a.p99_ms / f.p99_ms)
        for f, a in zip(floor, api, strict=True)
    ]


def _spread(values: list[float], form: str) -> str:
    """The median, and the range when there are several values."""
    median = form.format(statistics.median(values))
    if len(values) == 1:
        return median
    return f"median {median}, {form.format(min(values))} to {form.format(max(values))}"


def targets_table(results: list[LoadResult]) -> list[str]:
    """Per operation: its target, the rounds that met it, and the spread of each measure."""
    lines = [
        (
            "| Operation | Target | Rounds that met it | API / floor requests/s | API p99 "
            "| API p99 / floor p99 |"
        ),
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for operation, target in TARGETS.items():
        outcomes = round_outcomes(results, operation)
        if not outcomes:
            continue
        met = sum(outcome.meets(target) for outcome in outcomes)
        lines.append(
            f"| {operation} | {target.describe()} | {met} of {len(outcomes)} "
            f"| {_spread([o.share * 100 for o in outcomes], '{:.0f}%')} "
            f"| {_spread([o.p99_ms for o in outcomes], '{:.1f} ms')} "
            f"| {_spread([o.p99_ratio for o in outcomes], '{:.1f}x')} |"
        )
    return lines


@dataclass(frozen=True)
class Setup:
    connections: int
    threads: int
    seconds: float
    processes: int


def _stat_ticks(pid: int) -> tuple[int, int]:
    """(parent pid, clock ticks) of a live process: its user and system time, and that of its
    children that ended and were waited for (PostgreSQL's backends once they disconnect)."""
    # proc(5): after the ")" of comm, field 4 (ppid) is index 1, utime..cstime 11-14.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), sum(int(value) for value in fields[11:15])


def _process_tree(roots: list[int]) -> dict[int, int]:
    """Clock ticks of each live process under the roots (the roots included), by pid."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)], ticks[int(entry.name)] = _stat_ticks(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    tree: dict[int, int] = {}
    pending = [pid for pid in roots if pid in ticks]
    while pending:
        pid = pending.pop()
        tree[pid] = ticks[pid]
        pending.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU time of the live processes under the roots (the roots included)."""
    return sum(_process_tree(roots).values()) / _TICKS


# TCP states in /proc/net/tcp's st column (include/net/tcp_states.h).
ESTABLISHED, LISTEN = "01", "0A"


def socket_inodes(port: int, state: str = ESTABLISHED) -> set[int]:
    """Socket inodes of the TCP sockets in `state` whose local port is `port`.

    proc(5), /proc/net/tcp: local_address is hex ADDRESS:PORT, st is the state, and the tenth
    column is the socket's inode.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def connections_per_process(root: int, port: int) -> tuple[int, ...]:
    """How many of the established connections to `port` each process under `root` holds,
    most first: how the server's processes shared the client's connections."""
    inodes = socket_inodes(port)
    counts = []
    for pid in _process_tree([root]):
        held = 0
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = str(descriptor.readlink())
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                held += 1
        if held:
            counts.append(held)
    return tuple(sorted(counts, reverse=True))


def machine_cpu_seconds() -> float:
    """Busy CPU time of every core since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICKS


def database_and_cache_pids(stack: LocalStack) -> list[int]:
    """PostgreSQL's postmaster (its backends are its children) and redis-server."""
    pids = []
    if stack.postgres is not None:
        pid_file = stack.postgres.data_dir / "postmaster.pid"
        pids.append(int(pid_file.read_text().split("\n", 1)[0]))
    if stack.cache is not None:
        pids.append(stack.cache.process.pid)
    return pids


def run_wrk(
    url: str,
    script: Path,
    env: dict[str, str],
    setup: Setup,
    seconds: float,
    server_pid: int,
    services: list[int],
) -> tuple[dict[str, int], CpuSeconds, tuple[int, ...]]:
    """One wrk run; its summary (from the script's done()), the CPU each side spent (the
    server's process tree, wrk, the `services` (PostgreSQL, Redis) and the machine), and how
    many of wrk's connections each server process held a second in."""
    before = (tree_cpu_seconds([server_pid]), tree_cpu_seconds(services), machine_cpu_seconds())
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    shares: list[tuple[int, ...]] = []
    # wrk opens its connections at the start and keeps them for the run.
    sampler = threading.Timer(
        min(1.0, seconds / 2), lambda: shares.append(connections_per_process(server_pid, port))
    )
    started = time.perf_counter()
    wrk = subprocess.Popen(
        [
            "wrk",
            f"--threads={setup.threads}",
            f"--connections={setup.connections}",
            f"--duration={max(1, round(seconds))}s",
            "--timeout=10s",
            f"--script={script}",
            url,
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sampler.start()
    assert wrk.stdout is not None  # noqa: S101 - piped above
    with wrk.stdout:
        output = wrk.stdout.read()
    # wait4 gives the child's own resource usage: the load generator's CPU time.
    _, status, usage = os.wait4(wrk.pid, 0)
    wrk.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    sampler.join()
    if wrk.returncode != 0:
        raise SystemExit(f"wrk exited with {wrk.returncode}: {output.decode()}")
    server = tree_cpu_seconds([server_pid]) - before[0]
    database_and_cache = tree_cpu_seconds(services) - before[1]
    machine = machine_cpu_seconds() - before[2]
    summary: dict[str, int] = json.loads(output.decode().strip().splitlines()[-1])
    cpu = CpuSeconds(
        server=server,
        load_generator=usage.ru_utime + usage.ru_stime,
        database_and_cache=database_and_cache,
        machine=machine,
        wall=wall,
    )
    return summary, cpu, shares[0] if shares else ()


def start_floor(
    stack: LocalStack, processes: int, log: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    """The floor on free ports, as the superuser (it reads past row-level security)."""
    if stack.postgres is None:
        raise SystemExit("the floor needs the local PostgreSQL's superuser")
    port = devservers.free_port()
    env = {
        **stack.api_env,
        "BILLING_PORT": str(port),
        "BILLING_INTERNAL_PORT": str(devservers.free_port()),
        "DATABASE_USER": stack.postgres.admin_user,
    }
    with log.open("ab") as output:
        floor = subprocess.Popen(
            [sys.executable, "-m", "services.bench_floor", f"--processes={processes}"],
            cwd=REPOSITORY_ROOT,
            env=env,
            stdout=output,
            stderr=output,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for_health(f"{url}/health", [floor], threading.Event())
    return url, floor


def api_processes() -> int:
    """The server processes the API's container runs (its manifest's --processes)."""
    processes = server_processes(load_manifest("api")["command"])
    return 1 if processes is None else int(processes)


def _customer_paths(stack: LocalStack, token: str, directory: Path) -> Path:
    headers = {"Authorization": f"Bearer {token}"}
    paths = []
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as client:
        for number in range(CUSTOMERS):
            response = client.post(
                "/v1/customers",
                json=NEW_CUSTOMER,
                headers={"Idempotency-Key": f"bench-seed-{number}-{uuid.uuid4()}"},
            )
            response.raise_for_status()
            paths.append(f"/v1/customers/{response.json()['id']}")
    file = directory / "paths.txt"
    file.write_text("\n".join(paths) + "\n", encoding="utf-8")
    return file


def progress(message: str) -> None:
    """A line on stderr while the benchmark runs; the report goes to stdout at the end."""
    print(message, file=sys.stderr, flush=True)


def positive(kind: type[Number]) -> Callable[[str], Number]:
    """An argparse type: a number above 0 (argparse names the option when it refuses one)."""

    def parse(text: str) -> Number:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _api_pid(stack: LocalStack) -> int:
    return stack.services[0].pid


def measure(stack: LocalStack, setup: Setup, directory: Path, *, rounds: int) -> list[LoadResult]:
    """GET and POST against the API and the floor, alternating, `rounds` times each."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: .ci/install-servers wrk (nox -s benchmark runs it)")
    token = stack.token("bench-client", lifetime=timedelta(hours=2))
    paths = _customer_paths(stack, token, directory)
    script = directory / "load.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    floor_url, floor = start_floor(stack, setup.processes, directory / "floor.log")
    servers = {"API": (stack.url, _api_pid(stack)), "floor": (floor_url, floor.pid)}
    services = database_and_cache_pids(stack)
    results: list[LoadResult] = []
    runs = list(_runs(rounds))
    seconds = len(runs) * (WARMUP_SECONDS + setup.seconds)
    duration = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    progress(f"API beside its floor: {len(runs)} wrk runs, about {duration}")
    try:
        for number, run in enumerate(runs, start=1):
            operation, server = run
            url, pid = servers[server]
            env = {
                "BENCH_TOKEN": token,
                "BENCH_PATHS": str(paths),
                "BENCH_OPERATION": operation.split()[0],
                "BENCH_BODY": json.dumps(NEW_CUSTOMER),
                "BENCH_RUN": uuid.uuid4().hex,
            }
            run_wrk(url, script, env, setup, WARMUP_SECONDS, pid, services)
            load = os.getloadavg()[0]
            env["BENCH_RUN"] = uuid.uuid4().hex
            summary, cpu, connections = run_wrk(
                url, script, env, setup, setup.seconds, pid, services
            )
            results.append(
                LoadResult(
                    server=server,
                    operation=operation,
                    requests=summary["requests"],
                    seconds=summary["microseconds"] / 1e6,
                    errors=summary["errors"],
                    p50_ms=summary["p50"] / 1000,
                    p99_ms=summary["p99"] / 1000,
                    cpu=cpu,
                    connections=connections,
                    load_average=(load, os.getloadavg()[0]),
                )
            )
            done = results[-1]
            progress(
                f"  {number}/{len(runs)} {operation}, {server}: "
                f"{done.requests / done.seconds:,.0f} requests/s, p99 {done.p99_ms:.1f} ms"
            )
    finally:
        floor.terminate()
        floor.wait(timeout=60)
    return results


def _runs(rounds: int) -> Iterator[tuple[str, str]]:
    for _ in range(rounds):
        for operation in (GET, POST):
            for server in ("floor", "API"):
                yield operation, server


@contextmanager
def bench_stack(directory: Path) -> Iterator[LocalStack]:
    """The local platform without a worker, its rate limit out of the way, its logs kept."""
    with (
        (directory / "services.log").open("wb") as log,
        local_stack(
            directory / "state",
            with_worker=False,
            output=log,
            rate_limit_per_minute=BENCH_RATE_LIMIT_PER_MINUTE,
        ) as stack,
    ):
        yield stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    count, seconds = positive(int), positive(float)
    parser.add_argument("--connections", type=count, default=64, help="wrk's open connections")
    parser.add_argument("--seconds", type=seconds, default=10.0, help="each wrk run's duration")
    parser.add_argument("--wrk-threads", type=count, default=1)
    parser.add_argument(
        "--rounds", type=count, default=3, help="API and floor runs, alternating (default 3)"
    )


def run(stack: LocalStack, arguments: argparse.Namespace, directory: Path) -> str:
    """Measure, and the report as markdown."""
    setup = Setup(
        connections=arguments.connections,
        threads=arguments.wrk_threads,
        seconds=arguments.seconds,
        processes=api_processes(),
    )
    return report(measure(stack, setup, directory, rounds=arguments.rounds), setup)


def main(argv: list[str]) -> int:
    """The API half alone: `python -m services.bench_api`."""
    parser = argparse.ArgumentParser(prog="python -m services.bench_api", description=__doc__)
    add_arguments(parser)
    arguments = parser.parse_args(argv)
    directory = devservers.scratch_dir("billing-bench-api-")
    try:
        with bench_stack(directory) as stack:
            print(run(stack, arguments, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def report(results: list[LoadResult], setup: Setup) -> str:
    """The API beside the floor per operation, then how the cores were shared in each run."""
    lines = [
        (
            f"{setup.connections} connections, {setup.seconds:.0f} s a run, wrk with "
            f"{setup.threads} thread(s), {setup.processes} server process(es) each side, "
            f"{os.cpu_count()} cores"
        ),
        "",
        "| Operation | Server | Requests/s | p50 | p99 | Errors |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r.operation} | {r.server} | {r.per_second:,.0f} | {r.p50_ms:.1f} ms "
        f"| {r.p99_ms:.1f} ms | {r.errors} |"
        for r in results
    ]
    lines += ["", *targets_table(results)]
    lines += [
        "",
        (
            "CPU seconds per run (wall seconds x cores = capacity), load average before / after,"
            " and how many of wrk's connections each server process held:"
        ),
        "",
        (
            "| Operation | Server | Wall | Server processes (per request) | wrk "
            "| PostgreSQL + Redis | Others on the machine | Load average "
            "| wrk's connections per server process |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {r.operation} | {r.server} | {r.cpu.wall:.1f} s | {r.cpu.server:.1f} s "
        f"({r.cpu.server / max(1, r.requests) * 1000:.2f} ms) "
        f"| {r.cpu.load_generator:.1f} s | {r.cpu.database_and_cache:.1f} s "
        f"| {r.cpu.others:.1f} s | {r.load_average[0]:.1f} / {r.load_average[1]:.1f} "
        f"| {' / '.join(map(str, r.connections)) or 'not seen'} |"
        for r in results
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
