"""Benchmark the offline preview: cold (a new process, imports included) and warm (in-process).

`nox -s benchmark` runs it; the README reports its table. Target: every stack of every
environment in under 10 s warm on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from infra.markdown import table

RUNS = 5


def _cold_run(out: str) -> float:
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "infra", "preview", "--offline", "--quiet", "--out", out],
        check=True,
    )
    return time.perf_counter() - began


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        cold = [_cold_run(out) for _ in range(RUNS)]

    began = time.perf_counter()
    from infra.plans.produce.offline import render  # noqa: PLC0415 - import cost is measured
    from infra.settings import environment, known_environments  # noqa: PLC0415

    stacks = [(environment(e), c) for e in known_environments() for c in environment(e).clouds]
    imports = time.perf_counter() - began
    warm = []
    resources = 0
    for _ in range(RUNS + 1):
        began = time.perf_counter()
        resources = sum(len(render(env, cloud).resources) for env, cloud in stacks)
        warm.append(time.perf_counter() - began)
    warm = warm[1:]  # the first in-process pass still loads provider modules

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"Offline preview benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d}, {machine}")
    print(f"{len(stacks)} stacks, {resources} resources, {RUNS} runs each\n")
    rows = [
        [
            "Cold: new process, all stacks, plans written",
            *(f"{v:.2f} s" for v in (statistics.median(cold), min(cold), max(cold))),
        ],
        [
            "Warm: in-process render of all stacks",
            *(f"{v:.2f} s" for v in (statistics.median(warm), min(warm), max(warm))),
        ],
        ["Import of SDK, providers and programs", f"{imports:.2f} s", "", ""],
    ]
    print("\n".join(table(["Measure", "Median", "Min", "Max"], rows, right={1, 2, 3})))


if __name__ == "__main__":
    main()
