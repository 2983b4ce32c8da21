"""How often each decision flags a model that has no backdoor: norms drawn from a log-normal null.

A clean model's K label norms are drawn as ``exp(log(50) + sigma * N(0, 1))`` for K = 10, 43, 100 and 1000 labels
(MNIST, GTSRB, the many-label task) and a spread sigma of 0.3 to 1.0 (the clean models of the benchmark zoo
span 0.1 to 0.8 on the log scale, the zoo's clean 1000-label model 0.23). Per (K, sigma), the share of draws in
which each decision flags anything:

- ``paper``: the MAD index over raw norms > 2;
- ``k-aware``: the step-down order-statistic test, p < 0.001;
- ``k-aware-ratio`` (the default): that test, or the smallest one to three labels under a quarter of the median
  whose block is unusual at p < 0.05 over the blocks tried (``decision.RATIO_FLOOR``);
- ``floor p < 0.1``: the default with a weaker floor (the one the zoo's tune half preferred under the first
  block rule, benchmarks/decision_variants.py);
- ``size alone``: the default with the floor removed, to show what the floor is for.

With clean gaps (the favour criterion, ``decision._favour``): each draw also gets log gaps that follow its log
norms with correlation rho (0, 0.5 and 0.8; the zoo's clean models show rank correlations of -0.8 to 0.9 between
the two), ``0.3 * (rho * z + sqrt(1 - rho^2) * N(0, 1))`` with z the norm's standard score, decided by the default;
and, at rho = 0.5, the default with the favour criterion's line removed (the raw gaps judged against each other),
to show what the line is for.

The symmetric check is not applied (it needs a model). Writes benchmarks/results/decision_null.{json,md}.

    python benchmarks/decision_null.py [--draws 200]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any
from unittest.mock import patch

import torch
from common import markdown_table, write_results

from neuralcleanse import decision, favour

LABELS = (10, 43, 100, 1000)
SPREADS = (0.3, 0.5, 0.7, 1.0)
RULES = ("paper", "k-aware", "k-aware-ratio", "floor p < 0.1", "size alone")
FLOORS = {"floor p < 0.1": 1.0, "size alone": 0.0}  # -log10 p of the size criterion's floor
CORRELATIONS = (0.0, 0.5, 0.8)  # of the simulated log gaps with the log norms
GAP_SPREAD = 0.3  # log spread of the simulated gaps (the zoo's: 0.05 to 0.3); the criterion is scale-free
#: the favour criterion's ratio tried beside the default (decision.FAVOUR_RATIO): the one it replaced
OTHER_FAVOUR_RATIO = 0.35
GAP_RULES = (
    *(f"gaps rho={rho:g}" for rho in CORRELATIONS),
    "gaps rho=0.5, no line",
    f"gaps rho=0.5, FAVOUR_RATIO={OTHER_FAVOUR_RATIO:g}",
)


def clean_draws(draws: int) -> Iterator[tuple[int, float, list[torch.Tensor]]]:
    """Per (K, sigma), ``draws`` clean models' norms, from one seeded generator in a fixed order."""
    generator = torch.Generator().manual_seed(0)
    for k in LABELS:
        for sigma in SPREADS:
            log_norms = [
                math.log(50) + sigma * torch.randn(k, generator=generator, dtype=torch.float64) for _ in range(draws)
            ]
            yield k, sigma, [values.exp() for values in log_norms]


def flags(norms: torch.Tensor, rule: str) -> bool:
    if rule not in FLOORS:
        return bool(decision.decide(norms, rule).flagged)  # type: ignore[arg-type]
    with patch.object(decision, "RATIO_FLOOR", FLOORS[rule]):
        return bool(decision.decide(norms, "k-aware-ratio").flagged)


def gap_flags(models: list[torch.Tensor], sigma: float, seed: int) -> dict[str, float]:
    """Share of the draws the default flags given simulated clean gaps, per rule of :data:`GAP_RULES`."""
    generator = torch.Generator().manual_seed(seed)
    noise = [torch.randn(norms.numel(), generator=generator, dtype=torch.float64) for norms in models]
    shares = {}
    for rule in GAP_RULES:
        rho = float(rule.split("=")[1].split(",")[0])
        if "no line" in rule:
            setting: Any = patch.object(favour, "_theil_sen", lambda x, y: 0.0)
        elif "FAVOUR_RATIO" in rule:
            setting = patch.object(decision, "FAVOUR_RATIO", OTHER_FAVOUR_RATIO)
        else:
            setting = nullcontext()
        hits = 0
        with setting:
            for norms, e in zip(models, noise, strict=True):
                z = (norms.log() - math.log(50)) / sigma
                gaps = (GAP_SPREAD * (rho * z + math.sqrt(1 - rho**2) * e)).exp()
                hits += bool(decision.decide(norms, gaps=gaps).flagged)
        shares[rule] = hits / len(models)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200, help="clean models drawn per (K, sigma)")
    args = parser.parse_args()
    rows = []
    for k, sigma, models in clean_draws(args.draws):
        rates = {rule: sum(flags(norms, rule) for norms in models) / args.draws for rule in RULES}
        rates |= gap_flags(models, sigma, seed=len(rows))
        rows.append({"labels": k, "sigma": sigma, "draws": args.draws, **rates})
        print(rows[-1], flush=True)
    body = [[r["labels"], r["sigma"], *(f"{r[rule]:.3f}" for rule in RULES)] for r in rows]
    gap_body = [
        [r["labels"], r["sigma"], f"{r['k-aware-ratio']:.3f}", *(f"{r[g]:.3f}" for g in GAP_RULES)] for r in rows
    ]
    table = (
        "# Decisions on clean log-normal norms (benchmarks/decision_null.py)\n\n"
        f"Share of {args.draws} simulated clean models flagged, per number of labels K and log-scale spread sigma "
        "(no symmetric check).\n\n" + markdown_table(["K", "sigma", *RULES], body) + "\n## With clean gaps\n\n"
        "The default given simulated clean gaps that follow the norms with correlation rho (its favour "
        "criterion), beside the default without gaps; *no line*: the gaps judged against each other, not "
        f"against what the norms predict; *FAVOUR_RATIO={OTHER_FAVOUR_RATIO:g}*: the criterion testing labels up to "
        "that share of the median instead of the default's.\n\n"
        + markdown_table(["K", "sigma", "k-aware-ratio, no gaps", *GAP_RULES], gap_body)
    )
    write_results("decision_null", rows, table)


if __name__ == "__main__":
    main()
