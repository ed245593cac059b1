#!/usr/bin/env python3
"""Training-step throughput (images/s) of each architecture on this machine: forward + backward + AdamW.

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=8589934592 \\
        .venv/bin/python scripts/bench_train.py --image-size 128 --batch-size 64

Run it once with and once without GLIBC_TUNABLES to see the allocator's effect. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from catsdogs.core.cpus import available_cpus
from catsdogs.core.transforms import PreprocessConfig
from catsdogs.models.architectures import MODELS, create_model
from catsdogs.training.augment import train_transform
from catsdogs.training.runtime import autocast, cpu_has_fast_bf16


def step_rate(name: str, size: int, batch: int, bf16: bool, steps: int) -> tuple[float, float]:
    model = create_model(name)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    transform = train_transform(PreprocessConfig(image_size=size))
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    labels = torch.randint(0, 2, (batch,))
    aug_time = 0.0
    for i in range(steps + 2):
        if i == 2:
            start, aug_time = time.perf_counter(), 0.0
        t = time.perf_counter()
        x = transform.batch(pixels)
        x = x.contiguous(memory_format=torch.channels_last) if bf16 else x
        aug_time += time.perf_counter() - t
        with autocast(torch.device("cpu"), bf16):
            loss = F.cross_entropy(model(x).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    return batch * steps / elapsed, 1000 * aug_time / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(available_cpus())
    print(f"threads {torch.get_num_threads()}, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}")
    for name in sorted(MODELS):
        for bf16 in sorted({False, cpu_has_fast_bf16()}):
            rate, aug_ms = step_rate(name, args.image_size, args.batch_size, bf16, args.steps)
            mode = "bf16 + channels_last" if bf16 else "fp32 NCHW"
            print(
                f"{name:13s} {args.image_size}px batch {args.batch_size} {mode:21s} "
                f"{rate:7.1f} img/s  (augment {aug_ms:.1f} ms/batch)"
            )


if __name__ == "__main__":
    main()
