"""How many CPUs this process may really use (the cgroup quota a container gets, not the host's cores)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs granted by the cgroup quota (v2 ``cpu.max`` or v1 CFS quota), or None when unlimited/unknown."""
    try:
        quota_s, period_s = (root / "cpu.max").read_text().split()[:2]
        if quota_s == "max":
            return None
        return int(quota_s) / int(period_s)
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota = int((v1 / "cpu.cfs_quota_us").read_text())
            period = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may really use: the cgroup quota (rounded down, at least 1), else the affinity mask."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        # Rounding down: 1.5 CPUs run 1 busy thread without throttling, 2 threads get throttled.
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), printed beside every latency: numbers differ ~3x between hosts."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
