"""Benchmark helpers: a child process reports its own peak memory, not its parent's."""

from __future__ import annotations

import numpy as np

from leanseg.bench import peak_rss_mib, run_isolated


def _allocate(mib: int) -> int:
    a = np.ones(mib * 2**20, dtype=np.uint8)
    return int(a[::4096].sum())


def test_isolated_peak_memory_is_the_childs_own() -> None:
    big = np.ones(400 * 2**20, dtype=np.uint8)  # the parent peaks above 400 MiB
    assert peak_rss_mib() > 400
    _, small = run_isolated(_allocate, 1)
    _, large = run_isolated(_allocate, 200)
    assert small < 300, "the child inherited the parent's peak"
    assert 150 < large - small < 260
    del big
