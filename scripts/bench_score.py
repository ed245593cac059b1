"""Images/s of `catsdogs score` (Ray Data) against `catsdogs predict DIR` on the same photos, read in place.

    python scripts/bench_score.py                       # 2,000 Kaggle train photos, the shipped bundle
    python scripts/bench_score.py --n 500 --configs 2x1 1x2

A folder of symlinks to the first N photos (sorted names) of --source is what both commands read. Each run is a
whole command as a user types it, timed from start to exit: start-up, the model loads and Ray's start included.
A config AxT is A actors of T inference threads each. It also checks that both commands give the same labels.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from catsdogs.core.paths import MODELS_DIR, SHARED_DATA_DIR


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # predict exits 1 when a file failed, which is still a measurement
        sys.exit(f"{' '.join(cmd[:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SHARED_DATA_DIR / "dogs-vs-cats" / "train")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--model", default=str(MODELS_DIR))
    parser.add_argument("--configs", nargs="+", default=["2x1", "1x2"], help="AxT: actors x threads per actor")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    cli = shutil.which("catsdogs", path=str(Path(sys.executable).parent)) or "catsdogs"
    photos = sorted(p for p in args.source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.n]
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for p in photos:
            (folder / p.name).symlink_to(p.resolve())
        base = [cli, "predict", str(folder), "--model", args.model, "--format", "csv"]
        seconds, out = timed([*base, "--batch-size", str(args.batch_size)])
        labels = {Path(r["file"]).name: r["prediction"] for r in csv.DictReader(io.StringIO(out))}
        rate = len(photos) / seconds
        print(f"catsdogs predict DIR                   {len(photos)} photos  {seconds:6.1f} s  {rate:6.1f} img/s")
        for config in args.configs:
            actors, threads = (int(x) for x in config.split("x"))
            output = Path(tmp) / f"scores-{config}.parquet"
            cmd = [cli, "score", str(folder), "-o", str(output), "--model", args.model, "--actors", str(actors)]
            cmd += ["--threads", str(threads), "--num-cpus", str(actors * threads)]
            seconds, _ = timed([*cmd, "--batch-size", str(args.batch_size)])
            rows = pq.read_table(output, columns=["path", "label", "scored_at"]).to_pylist()
            same = sum(labels.get(Path(r["path"]).name) == r["label"] for r in rows)
            # Steady rate: the rows after the first batch, over the time from the first batch to the last.
            stamps = sorted(r["scored_at"] for r in rows)
            after_first = sum(s > stamps[0] for s in stamps)
            window = (stamps[-1] - stamps[0]).total_seconds()
            steady = f"{after_first / window:6.1f}" if window > 0 else "   n/a"
            print(
                f"catsdogs score {config} (actors x threads)  {len(rows)} rows  {seconds:6.1f} s  "
                f"{len(rows) / seconds:6.1f} img/s  (steady {steady} img/s once the actors run)  "
                f"labels equal to predict: {same}/{len(rows)}"
            )


if __name__ == "__main__":
    main()
