"""A second scan where the verdict is borderline: another seed and other clean images, the labels either scan flags.

A scan whose verdict is borderline (``neuralcleanse.steadiness``: under ``STEADY`` of the redraws of its norms within
the search's noise keep it) could well reach the other verdict with another seed and other clean images. This
measures how such a second scan should be joined with the first (``neuralcleanse.second_scan`` does what it chose):
the policy *union* flags the labels either scan flags, *intersection* those both flag; the first scan's verdict
stands where it was steady. Two measurements, mask search and its decision with the symmetric
check, as the zoo's replayed figures (no blend search, no stimulation):

- *replay*: the zoo's stored scans (default arithmetic, one thread, required families, both scan seeds), the
  verdict as zoo_report.py decides it, the steadiness as the scan computes it from the stored norms and clean gaps;
  each scan's second scan is the model's other stored seed. Every model of the zoo, no new scan.
- *rescan*: the models settle.py scanned (the zoo's required models on disk with a borderline stored scan, chosen
  for being hard), seeds 0 and 1 from settle.json (two searches per label, the scan's own code) and seeds 2 and 3
  scanned here the same way; seed s's second scan is seed s + 2, so the two seeds' policy verdicts share no scan
  and their agreement is measured, not replayed.

The policy is chosen on the tune half (even training seeds) and reported on the test half.

    python benchmarks/second_scan.py [--models name,...]
    python benchmarks/second_scan.py report
"""

from __future__ import annotations

import argparse
import functools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import settle
import steadiness as steadiness_replay
import torch
from common import add_scans, machine, markdown_table, read_results, rewrite_report

from neuralcleanse import ScanConfig
from neuralcleanse.steadiness import STEADY, steadiness

STEM = "second_scan"
SEEDS = (2, 3)  # the second scans of the settle.json scans of seeds 0 and 1

Flags = frozenset[int]
Join = Callable[[Flags, Flags], Flags]
LEVELS = (0.8, STEADY, 0.95, 0.99)  # steadiness under which a second scan runs, replayed

POLICIES: dict[str, Join | None] = {
    "one scan (default)": None,
    "union where borderline": lambda a, b: a | b,
    "intersection where borderline": lambda a, b: a & b,
}


def policy_flags(first: Flags, second: Flags, steady: float, join: Join | None, always: bool = False) -> Flags:
    """The labels a policy flags: ``join`` of the two scans' where the first is borderline (or ``always``)."""
    if join is None or (steady >= STEADY and not always):
        return first
    return join(first, second)


def tally(cases: list[dict[str, Any]], join: Join | None, always: bool = False) -> list[Any]:
    """Infected scans exact, clean scans flagged, second scans run, over ``cases`` (each a scan: its flags, its second
    scan's, its steadiness, its model's targets)."""
    infected = [c for c in cases if c["targets"]]
    clean = [c for c in cases if not c["targets"]]

    def flags(c: dict[str, Any]) -> Flags:
        return policy_flags(c["flags"], c["second"], c["steadiness"], join, always)

    doubled = sum(join is not None and (always or c["steadiness"] < STEADY) for c in cases)
    return [
        f"{sum(sorted(flags(c)) == c['targets'] for c in infected)}/{len(infected)}",
        f"{sum(bool(flags(c)) for c in clean)}/{len(clean)}",
        f"{doubled}/{len(cases)}",
    ]


@functools.cache
def replay_cases() -> list[dict[str, Any]]:
    """Every stored zoo scan with both seeds, its second scan the other seed (computed once per run: the steadiness
    of every stored scan takes a while)."""
    both, rows = steadiness_replay.scans()
    config = ScanConfig()
    cases = []
    for s in both:
        r, other = rows[(s["model"], s["seed"])], rows[(s["model"], 1 - s["seed"])]
        gaps = torch.tensor([float("nan") if g is None else g for g in s["gaps"]])
        steady = steadiness(torch.tensor(s["norms"]), config.decision, config.decision_threshold, gaps)
        cases.append(
            {
                "model": s["model"],
                "half": s["half"],
                "targets": sorted(r["targets"]),
                "flags": frozenset(r["flagged"]),
                "second": frozenset(other["flagged"]),
                "steadiness": steady,
            }
        )
    return cases


def rescan_cases(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[int, dict[str, Any]]]]:
    """The settle.json scans (seeds 0 and 1) with their second scans (seeds 2 and 3) from ``rows``."""
    scans: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in [*settle_rows(), *rows]:
        scans[r["model"]][r["seed"]] = r
    cases = []
    for model, by_seed in scans.items():
        for seed in (0, 1):
            if seed in by_seed and seed + 2 in by_seed:
                first, second = by_seed[seed], by_seed[seed + 2]
                cases.append(
                    {
                        "model": model,
                        "seed": seed,
                        "half": first["half"],
                        "targets": sorted(first["targets"]),
                        "flags": frozenset(first["flagged2"]),
                        "second": frozenset(second["flagged2"]),
                        "steadiness": first["steadiness2"],
                    }
                )
    return cases, scans


def settle_rows() -> list[dict[str, Any]]:
    return read_results(settle.STEM)


def agreement(cases: list[dict[str, Any]], join: Join | None) -> str:
    """Models whose two seeds' policy verdicts agree (infected or clean), and whose flagged labels are the same."""
    by_model: dict[str, dict[int, Flags]] = defaultdict(dict)
    for c in cases:
        by_model[c["model"]][c["seed"]] = policy_flags(c["flags"], c["second"], c["steadiness"], join)
    pairs = [s for s in by_model.values() if len(s) == 2]
    verdict = sum(bool(s[0]) == bool(s[1]) for s in pairs)
    labels = sum(s[0] == s[1] for s in pairs)
    return f"{verdict}/{len(pairs)} ({labels}/{len(pairs)} same labels)"


def half_agreement(replay: list[dict[str, Any]], rescan: list[dict[str, Any]], half: str) -> list[Any]:
    """Models of ``half`` whose two seeds reach the same verdict, with one scan each and under the union where
    borderline: a model with no borderline scan keeps its verdicts; a borderline one is counted from its rescans, or
    left out when it is not on disk (then its count is given apart)."""
    seeds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in replay:
        if c["half"] == half:
            seeds[c["model"]].append(c)
    union = POLICIES["union where borderline"]
    scanned = {c["model"] for c in rescan}
    single = policy = known = 0
    for model, (a, b) in seeds.items():
        if min(a["steadiness"], b["steadiness"]) >= STEADY:
            agree = bool(a["flags"]) == bool(b["flags"])
            known, single, policy = known + 1, single + agree, policy + agree
        elif model in scanned:
            cases = [c for c in rescan if c["model"] == model]
            by_seed = {c["seed"]: c for c in cases}
            known += 1
            single += bool(by_seed[0]["flags"]) == bool(by_seed[1]["flags"])
            joined = [policy_flags(c["flags"], c["second"], c["steadiness"], union) for c in (by_seed[0], by_seed[1])]
            policy += bool(joined[0]) == bool(joined[1])
    return [half, f"{single}/{known}", f"{policy}/{known}", len(seeds) - known]


def render(rows: list[dict[str, Any]]) -> str:
    replay = replay_cases()
    rescan, _ = rescan_cases(rows)
    body = []
    for half in ("tune", "test"):
        cases = [c for c in replay if c["half"] == half]
        for label, join in POLICIES.items():
            body.append([half, label, *tally(cases, join)])
        body.append([half, "union of both scans, always", *tally(cases, POLICIES["union where borderline"], True)])
    replay_table = markdown_table(["half", "policy", "infected exact", "clean flagged", "second scans"], body)
    body = []
    for half in ("tune", "test"):
        cases = [c for c in rescan if c["half"] == half]
        for label, join in POLICIES.items():
            body.append([half, label, *tally(cases, join), agreement(cases, join)])
    rescan_table = markdown_table(
        ["half", "policy", "infected exact", "clean flagged", "second scans", "models, seeds agree"], body
    )
    union = POLICIES["union where borderline"]
    levels = []
    for half in ("tune", "test"):
        cases = [c for c in replay if c["half"] == half]
        for level in LEVELS:
            joined = [{**c, "steadiness": 0.0 if c["steadiness"] < level else 1.0} for c in cases]
            levels.append([half, f"{level:g}" + (" (default)" if level == STEADY else ""), *tally(joined, union)])
    level_table = markdown_table(
        ["half", "second scan below", "infected exact", "clean flagged", "second scans"], levels
    )
    whole_table = markdown_table(
        ["half", "one scan", "union where borderline", "models left out (borderline, not on disk)"],
        [half_agreement(replay, rescan, half) for half in ("tune", "test")],
    )
    changed = [
        [
            c["model"],
            c["half"],
            c["seed"],
            c["targets"],
            sorted(c["flags"]),
            sorted(c["second"]),
            round(c["steadiness"], 2),
        ]
        for c in rescan
        if policy_flags(c["flags"], c["second"], c["steadiness"], union) != c["flags"]
    ]
    changed_table = markdown_table(
        ["model", "half", "seed", "targets", "first scan", "second scan (seed + 2)", "steadiness"], changed
    )
    return (
        "# A second scan where the verdict is borderline (benchmarks/second_scan.py)\n\n"
        "*union where borderline*: a scan whose steadiness is under 0.9 is joined by a second scan with another seed "
        "and other clean images, and flags the labels either flags; *intersection*: those both flag. Mask search, "
        "default decision and symmetric check (no blend search, no stimulation). *infected exact*: infected scans "
        "flagging exactly their targets; *clean flagged*: clean scans flagging anything; *second scans*: scans the "
        "policy joins with a second one. Tune half: even training seeds (where the policy is chosen); test half: "
        "odd.\n\n"
        "## Replayed on every zoo model with both scan seeds\n\n"
        "Each scan's second scan is its model's other stored seed (so the two seeds' policy verdicts share their "
        "scans, and their agreement is not measured here).\n\n"
        + replay_table
        + "\n## Scanned: the borderline models on disk, seeds 0 to 3\n\n"
        "settle.py's models (at least one stored scan borderline: hard models, not the zoo), seeds 0 and 1 from "
        "settle.json, their second scans seeds 2 and 3 (scanned here, the same code); *models, seeds agree*: the "
        "policy verdicts of seeds 0 and 1, which share no scan. A second scan costs what the first did.\n\n"
        + rescan_table
        + "\n## The level under which a verdict gets its second scan (replayed, union)\n\n"
        "The steadiness under which the union policy scans again, the warning's 0.9 and others.\n\n"
        + level_table
        + "\n## Seeds agreeing over the half (required families)\n\n"
        "Models whose two scan seeds reach the same verdict (infected or clean). A model with no borderline scan "
        "keeps its verdicts under the policy; a borderline one is counted from its rescans above (seeds 0 and 1, "
        "second scans 2 and 3), and left out when it is not on disk.\n\n"
        + whole_table
        + "\n## Scans whose flagged labels the union changes (rescans)\n\n"
        + changed_table
    )


def scan_row(name: str, seed: int) -> dict[str, Any]:
    """The default's two searches of every label and their verdict (settle.py's), one row."""
    row, _ = settle.two_searches(name, seed)
    return {**row, "machine": machine()}


def main() -> None:
    if rewrite_report(STEM, render):
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated zoo models (default: settle.json's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.models.split(",") if args.models else list(dict.fromkeys(r["model"] for r in settle_rows()))
    add_scans(STEM, names, SEEDS, scan_row, render, lambda r: f"{r['model']} {r['seed']} {r['flagged2']}")


if __name__ == "__main__":
    main()
