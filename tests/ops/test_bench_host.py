"""The bench's host CPU shares: idle cores and hypervisor steal per phase, so a noisy host shows in its numbers."""

from __future__ import annotations

import math

import pytest

from catsdogs.core.paths import PROJECT_ROOT

#          user nice system idle iowait irq softirq steal guest guest_nice
BEFORE = "cpu  1000 0 200 5000 100 0 10 40 0 0\ncpu0 500 0 100 2500 50 0 5 20 0 0\nintr 1 2 3\n"
AFTER = "cpu  1300 0 260 5200 100 0 20 140 0 0\ncpu0 650 0 130 2600 50 0 10 70 0 0\nintr 4 5 6\n"


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "scripts"))  # the bench's modules import their siblings


def test_shares_come_from_the_aggregate_cpu_line(scripts: None) -> None:
    import proc_tree

    before, after = proc_tree.host_cpu_ticks(BEFORE), proc_tree.host_cpu_ticks(AFTER)
    assert before == [1000, 0, 200, 5000, 100, 0, 10, 40]  # the 8 fields up to steal; guests are inside user
    shares = proc_tree.host_shares(before, after)
    # deltas: user 300, system 60, idle 200, iowait 0, softirq 10, steal 100 -> 670 ticks
    assert shares.idle_pct == pytest.approx(100 * 200 / 670)
    assert shares.steal_pct == pytest.approx(100 * 100 / 670)


def test_no_elapsed_ticks_is_not_a_share(scripts: None) -> None:
    import proc_tree

    ticks = proc_tree.host_cpu_ticks(BEFORE)
    shares = proc_tree.host_shares(ticks, ticks)
    assert math.isnan(shares.idle_pct) and math.isnan(shares.steal_pct)


def test_this_machine_reads_as_shares(scripts: None) -> None:
    import proc_tree

    before = proc_tree.host_cpu_ticks()
    sum(i * i for i in range(3_000_000))  # some CPU, so ticks elapse
    shares = proc_tree.host_shares(before, proc_tree.host_cpu_ticks())
    assert 0 <= shares.steal_pct <= 100 and 0 <= shares.idle_pct <= 100
    assert shares.idle_pct + shares.steal_pct <= 100


def test_the_table_shows_the_worst_phase_steal(scripts: None) -> None:
    import bench
    import bench_report

    def phase(c: int, steal: float) -> bench.Phase:
        return bench.Phase(c, 10, 0, 1.0, 5.0, 6.0, 7.0, host_idle_pct=20.0, host_steal_pct=steal)

    noisy = bench.ServerResult("noisy", {1: phase(1, 2.5), 8: phase(8, 14.8)})
    unknown = bench.ServerResult("unknown", {1: phase(1, float("nan")), 8: phase(8, float("nan"))})
    head, _, row, row_unknown = bench_report.table([noisy, unknown], [1, 8])
    assert head.split("|")[-2].strip() == "host steal % (max)"
    assert row.split("|")[-2].strip() == "14.8"
    assert row_unknown.split("|")[-2].strip() == "n/a"
