"""Heuristic block-dropping strategies, the baselines of AutoPath (Sun et al. 2020, Figures 3-7).

Each returns a keep mask of shape (N,) (True: run the block) for a model with N gated blocks.
"""

from __future__ import annotations

import numpy as np
import torch


def path_string(keep: torch.Tensor | np.ndarray) -> str:
    """A keep mask as a path ("1" kept, "0" dropped, block 1 first), as ``predict --path`` takes it."""
    return "".join("1" if v else "0" for v in np.asarray(keep).reshape(-1).tolist())


def drop_n(num_blocks: int, n: int) -> torch.Tensor:
    """DropN: drop only block ``n`` (0-based)."""
    if not 0 <= n < num_blocks:
        raise ValueError(f"block {n} does not exist in a model with {num_blocks} gated blocks")
    keep = torch.ones(num_blocks, dtype=torch.bool)
    keep[n] = False
    return keep


def drop_first(num_blocks: int, n: int) -> torch.Tensor:
    """DropFirstN: drop the first ``n`` blocks."""
    keep = torch.ones(num_blocks, dtype=torch.bool)
    keep[:n] = False
    return keep


def drop_last(num_blocks: int, n: int) -> torch.Tensor:
    """DropLastN: drop the last ``n`` blocks."""
    keep = torch.ones(num_blocks, dtype=torch.bool)
    keep[num_blocks - n :] = False
    return keep


def drop_random(num_blocks: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """DropRandomN: drop ``n`` blocks chosen uniformly without replacement."""
    keep = torch.ones(num_blocks, dtype=torch.bool)
    keep[torch.from_numpy(rng.choice(num_blocks, size=n, replace=False))] = False
    return keep


def every_mask(num_blocks: int, limit: int = 12) -> list[tuple[str, int, int, torch.Tensor]]:
    """All 2^N keep masks as (``"Mask"``, its number, blocks dropped, keep mask): the search behind the best fixed
    path at each cost (:mod:`leanseg.dynamic.headroom`). Refused above ``limit`` blocks (4096 masks)."""
    if num_blocks > limit:
        raise ValueError(f"{num_blocks} gated blocks give 2^{num_blocks} masks; search every mask only up to {limit} blocks")
    bits = torch.arange(2**num_blocks)[:, None].bitwise_right_shift(torch.arange(num_blocks)).bitwise_and(1).bool()
    return [("Mask", i, int((~keep).sum()), keep) for i, keep in enumerate(bits)]


def sweep_masks(num_blocks: int, repeats: int, seed: int = 0) -> list[tuple[str, int, int, torch.Tensor]]:
    """Every (strategy, parameter n, blocks dropped, keep mask) the sweep evaluates.

    DropN for each block; DropFirstN, DropLastN for n = 1..N-1; DropRandomN ``repeats`` times for each n.
    """
    rng = np.random.default_rng(seed)
    out = [("DropN", n, 1, drop_n(num_blocks, n)) for n in range(num_blocks)]
    for n in range(1, num_blocks):
        out.append(("DropFirstN", n, n, drop_first(num_blocks, n)))
        out.append(("DropLastN", n, n, drop_last(num_blocks, n)))
        out += [("DropRandomN", n, n, drop_random(num_blocks, n, rng)) for _ in range(repeats)]
    return out


def level_masks(num_blocks: int, per_level: int, seed: int = 0, limit: int = 12) -> torch.Tensor:
    """(M, N) keep masks for the table behind the headroom: every mask up to ``limit`` blocks; above it (ResNet-50's
    16: 65536 masks), per number of blocks kept, DropLastN's and DropFirstN's mask and up to ``per_level`` other
    distinct masks drawn uniformly (seeded). Each level's best fixed mask and oracle are then lower bounds."""
    if num_blocks <= limit:
        return torch.stack([m[3] for m in every_mask(num_blocks, limit)])
    rng = np.random.default_rng(seed)
    rows: dict[tuple[bool, ...], None] = {}
    for kept in range(num_blocks + 1):
        level = [drop_last(num_blocks, num_blocks - kept), drop_first(num_blocks, num_blocks - kept)]
        level += [drop_random(num_blocks, num_blocks - kept, rng) for _ in range(4 * per_level)]  # duplicates removed below
        distinct = list(dict.fromkeys(tuple(k.tolist()) for k in level))
        rows.update(dict.fromkeys(distinct[: per_level + 2]))
    return torch.tensor(list(rows), dtype=torch.bool)
