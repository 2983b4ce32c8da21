"""Does a scan's steadiness (neuralcleanse.steadiness) tell the verdicts that another scan seed would change?

Replayed on the zoo's stored scans (default arithmetic, one thread, required families, both scan seeds of every
model): each scan's steadiness at several noise sizes, against whether its model's two scan seeds reach different
verdicts (infected or clean, as zoo_report.py decides them, symmetric checks included). Per half, noise and level:
the AUROC of 1 - steadiness for the scans of such models, how many of those scans and of the others a warning at
that level marks (steadiness under 1 - level), and how many of the marked and of the unmarked scans flag exactly
their targets (nothing, for a clean model). The noise and the level are chosen on the tune half; the test half
reports. Also the noise itself: the robust standard deviation of one label's log(norm / median) from one scan to
the other (the consistent MAD of the two seeds' differences over the square root of 2), on the models of up to 43
labels.

    python benchmarks/steadiness.py
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
import zoo_report
from common import markdown_table, write_results

from neuralcleanse.outliers import CONSISTENCY
from neuralcleanse.steadiness import NORM_NOISE, STEADY, steadiness

NOISES = (0.1, NORM_NOISE, 0.18, 0.25)
LEVELS = (0.05, 0.1, 0.15, 0.2, 0.3)  # warn when 1 - steadiness reaches this
MAX_LABELS = 43  # the noise is measured on the 10- and 43-label models: the 1000-label one would outweigh them


def scans() -> tuple[list[dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    """The default scans of models scanned with both seeds, and the required ones' rows as zoo_report decides
    them."""
    every, judged = zoo_report.default_scans()
    rows = {key: r for key, r in judged.items() if r["required"]}
    both = [s for s in every if (s["model"], 0) in rows and (s["model"], 1) in rows]
    return both, rows


def noise_between_seeds(both: list[dict[str, Any]], half: str) -> float:
    diffs = []
    for s in both:
        other = next(o for o in both if o["model"] == s["model"] and o["seed"] == 1)
        if s["seed"] == 0 and s["half"] == half and len(s["norms"]) <= MAX_LABELS:
            a, b = statistics.median(s["norms"]), statistics.median(other["norms"])
            diffs += [math.log(x / a) - math.log(y / b) for x, y in zip(s["norms"], other["norms"], strict=True)]
    return CONSISTENCY * statistics.median(abs(d) for d in diffs) / math.sqrt(2)


def main() -> None:
    both, rows = scans()
    measured = []
    for s in both:
        gaps = torch.tensor([math.nan if g is None else g for g in s["gaps"]])
        r, other = rows[(s["model"], s["seed"])], rows[(s["model"], 1 - s["seed"])]
        shares = {noise: steadiness(torch.tensor(s["norms"]), gaps=gaps, noise=noise) for noise in NOISES}
        measured.append(
            {
                "model": s["model"],
                "seed": s["seed"],
                "half": s["half"],
                "flips": bool(r["flagged"]) != bool(other["flagged"]),
                "exact": r["flagged"] == r["targets"],
                "steadiness": {f"{noise:g}": share for noise, share in shares.items()},
            }
        )
    body = []
    for half in ("tune", "test"):
        for noise in NOISES:
            unsteady = [(1 - m["steadiness"][f"{noise:g}"], m) for m in measured if m["half"] == half]
            flips = [u for u, m in unsteady if m["flips"]]
            others = [u for u, m in unsteady if not m["flips"]]
            for level in LEVELS:
                marked = [m for u, m in unsteady if u >= level]
                unmarked = [m for u, m in unsteady if u < level]
                body.append(
                    [
                        half,
                        f"{noise:g}" + (" (default)" if noise == NORM_NOISE else ""),
                        f"{level:g}" + (" (default)" if math.isclose(level, 1 - STEADY) else ""),
                        zoo_report.auroc(flips, others),
                        f"{sum(u >= level for u in flips)}/{len(flips)}",
                        f"{sum(u >= level for u in others)}/{len(others)}",
                        f"{sum(m['exact'] for m in marked)}/{len(marked)}",
                        f"{sum(m['exact'] for m in unmarked)}/{len(unmarked)}",
                    ]
                )
    header = ["half", "noise", "level", "AUROC", "flipping scans marked", "other scans marked"]
    header += ["marked exact", "unmarked exact"]
    noise_line = ", ".join(f"{half} {noise_between_seeds(both, half):.3f}" for half in ("tune", "test"))
    table = (
        "# Steadiness against the verdicts that another scan seed changes (benchmarks/steadiness.py)\n\n"
        + (__doc__ or "").split("\n\n")[1].replace("\n", " ")
        + f"\n\nA label's log(norm / median) from one scan seed to the other, robust standard deviation: {noise_line}."
        + "\n\n"
        + markdown_table(header, body)
    )
    write_results("steadiness", measured, table)


if __name__ == "__main__":
    main()
