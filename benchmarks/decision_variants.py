"""Other forms of the default decision's size criterion, replayed on the zoo's scans and on simulated clean models.

    python benchmarks/decision_variants.py [--draws 200]

The default (``k-aware-ratio``) flags a label by size when it lies under a quarter of the median norm in the
unusual block (``decision._unusual_block``): of the blocks of the one, two or three smallest labels, the smallest
under a quarter of the median and all under ``decision.BLOCK_REACH`` of it, the largest for which P(at least j of
K natural draws lie this low) is under 0.05 divided by the number of labels under a quarter, the null fitted to
the labels from the block's largest up. Each variant changes one thing:

- ``blocks under a quarter``: the rule before the block's reach (every label of a block under a quarter of the
  median);

- ``first blocks, null above``: the rule this one replaced: from the smallest up, while the block is unusual at
  p < 0.05 (stopping at the first ordinary one, so two targets of the same norm hide each other), the null
  fitted to the labels above the block;
- ``step-down p < 0.05``: each label tested alone among the labels left, as the k-aware step-down does at
  p < 0.001 (weaker for clustered targets);
- ``blocks of up to 2`` and ``every block``: other limits on the blocks tried (``decision.MAX_BLOCK``);
- ``lower-half spread``: the null's spread from the labels below its median only (backdoors only shrink norms;
  natural norms of some models have a long upper tail);
- ``ratio 0.3 for blocks of 2-3``: a looser size guard for the labels of a block of several (several targets), a
  single label still under a quarter of the median;
- ``no Bonferroni``: a block unusual at p < 0.05 however many labels lie under a quarter of the median (two
  targets under it otherwise need p < 0.025);
- ``largest block, null above``: the default's blocks with the null fitted to the labels above the block, not
  from its largest up (a target at the block's top no longer widens the null that judges it).

Each is decided from the same cached norms, clean gaps (the favour and companion criteria, as in the default) and
symmetric checks as benchmarks/zoo_report.py (required families, default arithmetic; a flag without a cached check
stays flagged) and on the clean log-normal norms of benchmarks/decision_null.py (no gaps). Writes
benchmarks/results/decision_variants.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any
from unittest.mock import patch

import torch
import zoo
import zoo_report
from common import RESULTS, markdown_table, write_results
from decision_null import LABELS, clean_draws

from neuralcleanse import decision
from neuralcleanse.outliers import CONSISTENCY

SHOWN_SPREADS = (0.5, 0.7, 1.0)  # simulated spreads shown per K (the zoo's clean models: 0.1 to 0.8)


def first_blocks_null_above(log_norms: torch.Tensor) -> list[int]:
    """The rule the default replaced: from the smallest up while the block is unusual, null above the block."""
    ascending = log_norms.sort().values
    k = log_norms.numel()
    unusual = []
    for j, label in enumerate(log_norms.argsort().tolist()[: min(k // 2, k - 2)], start=1):
        tail = decision._null_cdf(float(ascending[j - 1]), ascending[j:])
        if decision._at_least(k, j, tail) <= decision.RATIO_FLOOR:
            break
        unusual.append(label)
    return unusual


def step_down_block(log_norms: torch.Tensor) -> list[int]:
    """Each label alone among those left, as the k-aware step-down, at the size criterion's level."""
    return decision._step_down(log_norms, decision.RATIO_FLOOR).flagged


def lower_half_cdf(x: float, values: torch.Tensor) -> float:
    """decision._null_cdf with the spread from the values below the median only."""
    median = float(values.quantile(0.5))
    below = median - values[values <= median]
    scale = math.hypot(CONSISTENCY * float(below.quantile(0.5)), decision.SEARCH_NOISE)
    return 0.5 * math.erfc(-(x - median) / scale / math.sqrt(2))


#: The looser size guard tried for blocks of two or three labels (several targets), the single label keeping
#: decision.SMALL_RATIO: a natural "hub" the guard is there for is one label.
BLOCK_RATIO = 0.3


def block_ratio(j: int) -> float:
    return decision.SMALL_RATIO if j == 1 else BLOCK_RATIO


def looser_block_ratio(log_norms: torch.Tensor) -> tuple[list[int], list[float]]:
    """decision._by_size with the halvings scaled by :func:`block_ratio` of the unusual block's size (the rest of
    the default unchanged)."""
    block = decision._unusual_block(log_norms)
    halvings = (float(log_norms.quantile(0.5)) - log_norms) / math.log(2) / math.log2(1 / block_ratio(len(block)))
    return block, halvings.tolist()


def unusual_without_bonferroni(log_norms: torch.Tensor) -> list[int]:
    """decision._unusual_block with the floor at decision.RATIO_FLOOR whatever the number of small labels."""
    ascending, order = log_norms.sort()
    median = float(ascending.quantile(0.5))
    smallest = ascending[: min(decision.MAX_BLOCK, log_norms.numel() - 2)].tolist()
    if not any(x < median + math.log(decision.SMALL_RATIO) for x in smallest):
        return []
    reach = sum(x < median + math.log(decision.BLOCK_REACH) for x in smallest)
    unusual = [j for j in range(1, reach + 1) if decision._block_surprise(ascending, j) > decision.RATIO_FLOOR]
    return order[: max(unusual, default=0)].tolist()


def block_surprise_null_above(ascending: torch.Tensor, j: int) -> float:
    """decision._block_surprise with the null fitted to the labels above the block."""
    return decision._at_least(ascending.numel(), j, decision._null_cdf(float(ascending[j - 1]), ascending[j:]))


def replaced(name: str, function: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: patch.object(decision, name, function)


_UNUSUAL_BLOCK = decision._unusual_block


def blocks_up_to(limit: int) -> Callable[[], Any]:
    """The size criterion with another limit on its blocks (decision.MAX_BLOCK), the favour criterion unchanged."""

    def unusual(log_norms: torch.Tensor) -> list[int]:
        with patch.object(decision, "MAX_BLOCK", limit):
            return _UNUSUAL_BLOCK(log_norms)

    return replaced("_unusual_block", unusual)


VARIANTS: dict[str, Callable[[], Any]] = {
    "default (largest of up to 3 blocks)": nullcontext,
    "blocks under a quarter": lambda: patch.object(decision, "BLOCK_REACH", decision.SMALL_RATIO),
    "first blocks, null above": replaced("_unusual_block", first_blocks_null_above),
    "step-down p < 0.05": replaced("_unusual_block", step_down_block),
    "blocks of up to 2": blocks_up_to(2),
    "every block": blocks_up_to(10**6),
    "lower-half spread": replaced("_null_cdf", lower_half_cdf),
    f"ratio {BLOCK_RATIO} for blocks of 2-3": replaced("_by_size", looser_block_ratio),
    "no Bonferroni": replaced("_unusual_block", unusual_without_bonferroni),
    "largest block, null above": replaced("_block_surprise", block_surprise_null_above),
}


def zoo_figures(scans: list[dict[str, Any]], cache: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Exact TPR, FPR and AUROC per half (required families) as zoo_report decides them, and the rows."""
    rows = [r for r in zoo_report.zoo_rows(scans, cache, decision.DEFAULT_THRESHOLDS["k-aware-ratio"]) if r["required"]]
    out: dict[str, Any] = {}
    for half in ("tune", "test"):
        f = zoo_report.figures([r for r in rows if r["half"] == half])
        area = None if f["new AUROC"] == "—" else float(f["new AUROC"])
        out |= {f"{half} TPR": f["new TPR"], f"{half} FPR": f["new FPR"], f"{half} AUROC": area}
    out["unchecked flags"] = sum(not r["pairs_checked"] for r in rows)
    return out, rows


def simulated(draws: int) -> dict[str, float]:
    """Share of simulated clean models flagged per (K, sigma), the same draws for every variant."""
    return {
        f"K={k} sigma={sigma:g}": sum(bool(decision.decide(norms).flagged) for norms in models) / draws
        for k, sigma, models in clean_draws(draws)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200, help="simulated clean models per (K, sigma)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scans = json.loads((RESULTS / "zoo_scans.json").read_text())
    scans = [s for s in scans if zoo.row_variant(s) == zoo_report.DEFAULT_VARIANT]
    cache = json.loads(zoo_report.PAIRS_FILE.read_text())
    zoo_report.cache_scan_pairs(scans, cache)
    results, flagged = [], {}
    for name in VARIANTS:
        with VARIANTS[name]():
            figures, rows = zoo_figures(scans, cache)
            rates = simulated(args.draws)
        flagged[name] = {(r["model"], r["seed"]): r for r in rows}
        results.append({"variant": name, **figures, "simulated clean flagged": rates})
        print(results[-1], flush=True)
    default = next(iter(VARIANTS))
    changes = [
        [name, r["half"], r["model"], r["seed"], r["targets"], flagged[default][key]["flagged"], r["flagged"]]
        for name in list(VARIANTS)[1:]
        for key, r in flagged[name].items()
        if r["flagged"] != flagged[default][key]["flagged"]
    ]
    zoo_columns = ["tune TPR", "tune FPR", "test TPR", "test FPR", "test AUROC", "unchecked flags"]
    shown = [f"K={k} sigma={s:g}" for k in LABELS for s in SHOWN_SPREADS]
    table = (
        "# Variants of the size criterion (benchmarks/decision_variants.py)\n\n"
        "The zoo's required families, default arithmetic, decided from the cached norms and symmetric checks "
        "(TPR: exactly the targets; FPR: anything on a clean model), and the share of simulated clean models "
        f"flagged ({args.draws} draws per K and log spread sigma, no symmetric check).\n\n"
        + markdown_table(["variant", *zoo_columns], [[r["variant"], *(r[c] for c in zoo_columns)] for r in results])
        + "\n## Simulated clean models flagged\n\n"
        + markdown_table(
            ["variant", *shown], [[r["variant"], *(r["simulated clean flagged"][c] for c in shown)] for r in results]
        )
        + "\n## Scans whose flagged labels change\n\n"
        + markdown_table(["variant", "half", "model", "seed", "targets", "default flags", "variant flags"], changes)
    )
    write_results("decision_variants", results, table)


if __name__ == "__main__":
    main()
