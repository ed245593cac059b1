"""Where and how training runs: device, bf16, threads, seeding, malloc tuning and torch.distributed.

``catsdogs train`` runs unchanged under ``torchrun --nproc-per-node N`` (and multi-node rendezvous):
``init_distributed`` reads torchrun's environment and picks gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from catsdogs.core.paths import PACKAGE_DIR

log = logging.getLogger(__name__)

# glibc hands large freed activations back to the OS after every step and page-faults them in
# again on the next one; these keep them (up to ~2x faster CPU training).
MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=8589934592"


def is_catsdogs_cli(argv0: str) -> bool:
    """Whether the process is the ``catsdogs`` CLI: its script, or ``python -m catsdogs`` (not another ``-m``)."""
    path = Path(argv0)
    return path.name == "catsdogs" or (path.name == "__main__.py" and path.resolve() == _OWN_MAIN)


_OWN_MAIN = (PACKAGE_DIR / "__main__.py").resolve()


def reexec_with_malloc_tunables() -> None:
    """Restart this CLI process with ``MALLOC_TUNABLES`` (they must be set before the process starts).

    ``GLIBC_TUNABLES`` already set (to anything) means the user chose; non-CLI callers are left alone.
    """
    if sys.platform != "linux" or "GLIBC_TUNABLES" in os.environ:
        return
    if not is_catsdogs_cli(sys.argv[0]):
        return
    env = {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES}
    os.execve(sys.executable, [sys.executable, "-m", "catsdogs", *sys.argv[1:]], env)


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU flags include AMX or AVX512-BF16 (``cpuinfo``: /proc/cpuinfo's text)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return "amx_bf16" in flags or "avx512_bf16" in flags


def select_device(pref: str, *, cuda_available: bool | None = None) -> torch.device:
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if pref == "cuda" and not cuda:
        raise RuntimeError("device=cuda requested but CUDA is not available")
    return torch.device("cuda" if pref == "cuda" or (pref == "auto" and cuda) else "cpu")


def use_bf16(pref: str, device: torch.device, *, cpuinfo: str | None = None) -> bool:
    if pref in ("on", "off"):
        return pref == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16(cpuinfo)


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def memory_format(device: torch.device, bf16: bool) -> torch.memory_format:
    # oneDNN uses AMX only with channels_last; CUDA convolutions prefer it too.
    return torch.channels_last if bf16 or device.type == "cuda" else torch.contiguous_format


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


# --- torch.distributed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> Dist:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), else a single-process job."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    import torch.distributed as tdist

    dist = Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not tdist.is_initialized():
        cuda = select_device(device_pref).type == "cuda"
        if cuda:
            torch.cuda.set_device(dist.local_rank)
        tdist.init_process_group("nccl" if cuda else "gloo")
    log.info("distributed: rank %d of %d (local rank %d)", dist.rank, dist.world_size, dist.local_rank)
    return dist


def device_for(dist: Dist, pref: str) -> torch.device:
    device = select_device(pref)
    return torch.device("cuda", dist.local_rank) if device.type == "cuda" and dist.enabled else device


def all_reduce_sum(values: list[float], dist: Dist, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (identity in a single process)."""
    if not dist.enabled:
        return values
    import torch.distributed as tdist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return t.tolist()


def all_gather_rows(array: np.ndarray, dist: Dist) -> list[np.ndarray]:
    """Every rank's ``array`` (any shape, any length), in rank order."""
    if not dist.enabled:
        return [array]
    import torch.distributed as tdist

    gathered: list[np.ndarray | None] = [None] * dist.world_size
    tdist.all_gather_object(gathered, array)
    return [g for g in gathered if g is not None]


def barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()


def shutdown_distributed(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()
