"""CPU time and memory of a server's whole process tree, from /proc (Linux), for the benchmarks.

A server is often several processes: uvicorn workers, BentoML's arbiter and one process per service,
LitServe's API server, inference worker and queue manager. Each figure sums the process and all its
descendants. Shared pages (a forked worker's copy-on-write memory) count once per process, as ``ps`` shows.
The host's idle and steal shares over a phase (from /proc/stat) tell an idle core from one a noisy
neighbour took: on a shared VM, steal moves req/s by 10-20 % from run to run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name (fields[1] is the parent pid)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended meanwhile
            continue
    return out


def descendants(pid: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """``pid`` and every process below it (children, grandchildren, ...)."""
    stats = _stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process tree under ``pid`` (of the processes alive now)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = _stats()
    return sum(
        (int(stats[p][11]) + int(stats[p][12])) / tick  # utime + stime
        for p in descendants(pid, stats)
        if p in stats
    )


def _status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith(key + ":")), 0)


def rss_mb(pid: int) -> float:
    """Resident memory of the process tree under ``pid`` now, in MB."""
    return sum(_status_kb(p, "VmRSS") for p in descendants(pid)) / 1024


def peak_rss_mb(pid: int) -> float:
    """The sum of each process's peak resident memory (VmHWM) in the tree under ``pid``, in MB.

    Each process's own high-water mark since it started (model load and warm-up included), so no sampling
    misses a burst; the processes may not have peaked at the same moment, so this can exceed the true peak.
    """
    return sum(_status_kb(p, "VmHWM") for p in descendants(pid)) / 1024


@dataclass(frozen=True)
class HostShares:
    """How the whole machine's CPU time split over an interval, in % of all cores' time."""

    idle_pct: float  # no process had work: the cores the server left unused
    steal_pct: float  # the hypervisor ran another guest: a noisy host, not the server, took it


def host_cpu_ticks(stat: str | None = None) -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat: user nice system idle iowait irq softirq steal (ticks)."""
    text = Path("/proc/stat").read_text() if stat is None else stat
    line = next(line for line in text.splitlines() if line.startswith("cpu "))
    return [int(x) for x in line.split()[1:9]]


def host_shares(before: list[int], after: list[int]) -> HostShares:
    """Idle (idle + iowait) and steal shares between two ``host_cpu_ticks`` readings (nan if none elapsed)."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    if total <= 0:
        return HostShares(float("nan"), float("nan"))
    return HostShares(100 * (delta[3] + delta[4]) / total, 100 * delta[7] / total)
