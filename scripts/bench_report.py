"""What ``make bench`` prints at the end: one table for every server, the physical bound, ratios and goals."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench import ServerResult
    from bench_bound import Bound

# The serving goals (README "Speed", issue 20), checked on the same run.
P50_GOAL_MS = 4.0
BASELINE_GOAL = 8.0  # x the seed-style server's req/s at c=8
PEER_GOAL = 1.3  # x every peer's req/s at c=8
BOUND_GOAL = 0.8  # share of the physical bound at c=8


def _num(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def table(rows: list[ServerResult], conc: list[int]) -> list[str]:
    """Markdown table: p50/p99 at c=1, req/s (200s) at each c > 1, server CPU per request at each c, peak RSS,
    and the most CPU the host's other guests stole in any phase (rows are comparable when it is alike)."""
    many = [c for c in conc if c != 1]
    head = ["server", "p50 ms c=1", "p99 ms c=1"] + [f"req/s c={c}" for c in many]
    head += [f"CPU ms/req c={c}" for c in conc] + ["peak RSS MB", "non-200", "host steal % (max)"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        one = r.phases.get(1)
        cells = [r.name, _num(one.p50_ms) if one else "", _num(one.p99_ms) if one else ""]
        cells += [_num(r.phases[c].rps) for c in many]
        cells += [_num(r.phases[c].cpu_ms_per_request) for c in conc]
        cells += [_num(r.peak_rss_mb, 0), str(sum(p.errors for p in r.phases.values()))]
        steal = [p.host_steal_pct for p in r.phases.values() if not math.isnan(p.host_steal_pct)]
        cells.append(_num(max(steal, default=float("nan"))))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratio(better: float, worse: float) -> str:
    """How many times ``better`` beats ``worse`` (both 'higher is better')."""
    return "n/a" if not (better and worse) or math.isnan(better) or math.isnan(worse) else f"{better / worse:.2f}x"


def versus(ours: ServerResult, other: ServerResult, conc: list[int]) -> str:
    """catsdogs against another server, every column as 'times better' (> 1: catsdogs ahead)."""
    parts = []
    if 1 in ours.phases and 1 in other.phases:
        parts.append(f"p50 c=1 {_ratio(other.phases[1].p50_ms, ours.phases[1].p50_ms)}")
    parts += [f"req/s c={c} {_ratio(ours.phases[c].rps, other.phases[c].rps)}" for c in conc if c != 1]
    parts += [
        f"CPU/req c={c} {_ratio(other.phases[c].cpu_ms_per_request, ours.phases[c].cpu_ms_per_request)}" for c in conc
    ]
    parts.append(f"peak RSS {_ratio(other.peak_rss_mb, ours.peak_rss_mb)}")
    return f"catsdogs vs {other.name}: " + ", ".join(parts)


def agreement(ours: ServerResult, other: ServerResult) -> str:
    """Do the two servers give the same answers for the warm-up images (same bundle, same Predictor)?"""
    common = sorted(set(ours.answers) & set(other.answers))
    same = sum(
        ours.answers[k][0] == other.answers[k][0] and abs(ours.answers[k][1] - other.answers[k][1]) < 0.01
        for k in common
    )
    return f"{other.name}: {same}/{len(common)} warm-up answers as catsdogs's (label, probability within 0.01)"


def bound_lines(rows: list[ServerResult], bound: Bound) -> list[str]:
    lines = [bound.describe()]
    for r in rows:
        if 8 in r.phases:
            rps = r.phases[8].rps
            lines.append(
                f"  {r.name}: {rps:.1f} req/s at c=8 = {rps / bound.rps:.0%} of the bound "
                f"({rps / bound.rps_batched:.0%} of the batched bound)"
            )
    return lines


def goals(ours: ServerResult, peers: list[ServerResult], base: ServerResult | None, bound: Bound) -> list[str]:
    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    lines = []
    if 1 in ours.phases:
        p50 = ours.phases[1].p50_ms
        lines.append(f"target p50 <= {P50_GOAL_MS:g} ms at c=1: {p50:.1f} ms -> {verdict(p50 <= P50_GOAL_MS)}")
    if 8 not in ours.phases:
        return lines
    rps = ours.phases[8].rps
    if base and 8 in base.phases:
        x = rps / base.phases[8].rps
        lines.append(
            f"target >= {BASELINE_GOAL:g}x the seed-style req/s at c=8: {x:.1f}x -> {verdict(x >= BASELINE_GOAL)}"
        )
    for peer in peers:
        x = rps / peer.phases[8].rps
        lines.append(f"target >= {PEER_GOAL:g}x {peer.name} at c=8: {x:.3f}x -> {verdict(x >= PEER_GOAL)}")
    share = rps / bound.rps
    lines.append(
        f"target >= {BOUND_GOAL:.0%} of the physical bound at c=8: {share:.0%} -> {verdict(share >= BOUND_GOAL)}"
    )
    return lines


def report(
    rows: list[ServerResult], peers: list[ServerResult], base: ServerResult | None, bound: Bound, conc: list[int]
) -> None:
    """Print everything after the runs: the table, the bound and each server's share of it, ratios, goals."""
    ours = rows[0]
    out = ["", *table(rows, conc), "", *bound_lines(rows, bound), ""]
    out += [versus(ours, other, conc) for other in rows[1:]]
    if peers:
        out += ["", *(agreement(ours, peer) for peer in peers)]
    out += ["", *goals(ours, peers, base, bound)]
    print("\n".join(out), flush=True)
