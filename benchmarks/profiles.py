"""Natural label profiles (``neuralcleanse.profiles``): the built-in ones, and what they change in the zoo's verdicts.

Builds the profile (norms and clean gaps) of MNIST, CIFAR-10 and GTSRB from the clean models of the zoo's tune half
(the stored scans of zoo_scans.json, default arithmetic, both scan seeds) and writes those of MIN_MODELS models or
more into the package (``src/neuralcleanse/profile_data``; GTSRB's is measured on too few). Then replays every stored
scan of the zoo's required families with the default decision and the cached symmetric checks (as zoo_report.py
does), once on the raw norms and gaps and once read through the profile (naturally small labels' norms discounted,
every gap read over its class's), and with a second scan where the verdict is borderline (the model's other stored
seed, as second_scan.py replays it). A clean tune-half model is judged with the profile of the other clean models
(leave one model out); the test half, with the built-in profile, which none of its models helped to measure.

    python benchmarks/profiles.py
    python benchmarks/profiles.py report
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from typing import Any

import zoo_report
from common import ROOT, markdown_table, read_results, rewrite_report, write_results

from neuralcleanse import ScanConfig
from neuralcleanse.decision import decide
from neuralcleanse.profiles import LabelProfile, profile_from_scans
from neuralcleanse.steadiness import STEADY, steadiness

STEM = "profiles"
PROFILED = zoo_report.PROFILED  # the datasets measured (the 100- and 1000-label tasks have no profile)
PROFILE_DIR = ROOT.parent / "src" / "neuralcleanse" / "profile_data"
SOURCE = "benchmarks/profiles.py: the clean models of the benchmark zoo's tune half, scan seeds 0 and 1"
#: A built-in profile is measured on this many clean models at least. GTSRB's tune half has 5 (of three
#: architectures), whose left-out model follows the others' mean at a median correlation of 0.48: its profile is
#: measured and tabled here, not shipped (docs/detection.md, "Naturally small labels", says what it did).
MIN_MODELS = 10

Scan = dict[str, Any]


def build(scans: list[Scan]) -> dict[str, LabelProfile]:
    """The tune half's profiles; those of MIN_MODELS clean models or more are written into the package (the
    others' files removed)."""
    profiles = {}
    gaps = zoo_report.clean_references(scans, "tune", "gaps")
    for dataset, by_model in sorted(zoo_report.clean_references(scans, "tune").items()):
        profiles[dataset] = profile_from_scans(by_model, dataset, SOURCE, gaps.get(dataset))
        path = PROFILE_DIR / f"{dataset}.json"
        if profiles[dataset].models >= MIN_MODELS:
            path.write_text(json.dumps(profiles[dataset].to_dict(), indent=1) + "\n")
        else:
            path.unlink(missing_ok=True)
    return profiles


def correlations(profile: LabelProfile, by_model: dict[str, list[list[float]]]) -> list[float]:
    """Per scan, the correlation of its log ratios with ``profile``'s."""
    out = []
    for scans in by_model.values():
        for norms in scans:
            m = statistics.median(norms)
            out.append(statistics.correlation([math.log(n / m) for n in norms], list(profile.log_ratios)))
    return out


def verdict(scan: Scan, cache: dict[str, Any], profile: LabelProfile | None) -> tuple[list[int], float, bool]:
    """(flagged, steadiness, complete): the default decision on what the zoo's report reads of the scan through
    ``profile`` (``zoo_report.decision_inputs``), then the cached symmetric checks; ``complete`` is false when a
    flagged label has no cached check (it stays flagged)."""
    config = ScanConfig()
    norms, gaps, pixels = zoo_report.decision_inputs(scan, profile)
    d = decide(norms, config.decision, config.decision_threshold, gaps, pixels)
    flagged, complete = zoo_report.checked(scan, cache, d.flagged)
    return flagged, steadiness(norms, config.decision, config.decision_threshold, gaps, pixels=pixels), complete


def measure() -> list[Scan]:
    scans, judged = zoo_report.default_scans()
    cache = json.loads(zoo_report.PAIRS_FILE.read_text()) if zoo_report.PAIRS_FILE.exists() else {}
    zoo_report.cache_scan_pairs(scans, cache)
    profiles = build(scans)
    tune, test = zoo_report.clean_references(scans, "tune"), zoo_report.clean_references(scans, "test")
    zoo_report._profile.cache_clear()  # the built-in profiles were just rewritten
    rows = []
    for s in scans:
        if not judged[(s["model"], s["seed"])]["required"]:
            continue
        profile = zoo_report.profile_of(s)
        raw, raw_steady, raw_complete = verdict(s, cache, None)
        new, new_steady, new_complete = verdict(s, cache, profile)
        rows.append(
            {
                "model": s["model"],
                "dataset": zoo_report.task(s),
                "family": s["family"],
                "half": s["half"],
                "seed": s["seed"],
                "targets": sorted(s["targets"]),
                "profile": None if profile is None else f"{profile.name} ({profile.models} models)",
                "flagged": raw,
                "steadiness": raw_steady,
                "pairs_checked": raw_complete,
                "profile_flagged": new,
                "profile_steadiness": new_steady,
                "profile_pairs_checked": new_complete,
            }
        )
    stats = {
        dataset: {
            "shipped": p.models >= MIN_MODELS,
            "weight": p.weight,
            "ratios": p.expected_ratios(),
            "gap_weight": p.gap_weight,
            "gap_ratios": p.expected_gap_ratios(),
            "models": p.models,
            "scans": p.scans,
            "tune": statistics.median(_loo_correlations(tune[dataset])),
            "test": statistics.median(correlations(p, test[dataset])),
        }
        for dataset, p in profiles.items()
    }
    return [{"profiles": stats}, *rows]


def _loo_correlations(by_model: dict[str, list[list[float]]]) -> list[float]:
    out = []
    for model in by_model:
        others = profile_from_scans({m: n for m, n in by_model.items() if m != model}, "loo")
        out += correlations(others, {model: by_model[model]})
    return out


def joined(rows: list[Scan], key: str) -> dict[tuple[str, int], list[int]]:
    """Each scan's flags with a second scan where its verdict is borderline: the union with the model's other
    seed (key ``flagged`` or ``profile_flagged``; steadiness from the same decision)."""
    steady = "steadiness" if key == "flagged" else "profile_steadiness"
    by = {(r["model"], r["seed"]): r for r in rows}
    out = {}
    for (model, seed), r in by.items():
        other = by.get((model, 1 - seed))
        second = set(other[key]) if other is not None and r[steady] < STEADY else set()
        out[(model, seed)] = sorted(set(r[key]) | second)
    return out


def count(rs: list[Scan], ok: Any) -> str:
    return f"{sum(ok(r) for r in rs)}/{len(rs)}"


def scan_key(r: Scan) -> tuple[str, int]:
    return (r["model"], r["seed"])


def table(stored: list[Scan]) -> str:
    stats, rows = stored[0]["profiles"], stored[1:]
    lines = [
        "# Natural label profiles (benchmarks/profiles.py)\n",
        "Built from the clean models of the zoo's tune half (both scan seeds). *weight*: the slope of a clean "
        "model's log ratios (norm over median) on the mean of the other models' (leave one model out; what the "
        "discount uses). *correlation*: median over scans of the correlation of a scan's log ratios with the "
        "profile (tune: the other models' profile; test: the built-in one).\n",
        markdown_table(
            [
                "dataset",
                "models",
                "scans",
                "weight",
                "correlation, tune (leave one out)",
                "correlation, test",
                "shipped",
            ],
            [
                [
                    d,
                    s["models"],
                    s["scans"],
                    round(s["weight"], 3),
                    round(s["tune"], 3),
                    round(s["test"], 3),
                    "yes" if s.get("shipped", True) else f"no (fewer than {MIN_MODELS} models)",
                ]
                for d, s in sorted(stats.items())
            ],
        ),
        "\n## Per label: expected share of the median norm and of the median clean gap\n",
        "The mean over the reference scans of each label's norm over the scan's median norm (what a naturally small "
        "label's norm is divided by) and of its clean gap over the median gap (what every label's gap is divided by, "
        "to the gap weight; scans with a gap unknown or 0, as a softmax leaves them, are left out of the gaps).\n",
        *[
            markdown_table(
                ["dataset", "", *map(str, range(len(s["ratios"])))],
                [
                    [d, "norm", *(f"{x:.2f}" for x in s["ratios"])],
                    [d, f"gap (weight {s['gap_weight']:.2f})", *(f"{x:.2f}" for x in s["gap_ratios"] or ())],
                ],
            )
            + "\n"
            for d, s in sorted(stats.items())
            if "ratios" in s and len(s["ratios"]) <= 10
        ],
        "\n## The default decision with and without the profile (required families)\n",
        "Stored scans replayed: the default decision, then the cached symmetric checks. *raw*: the norms as they are "
        "(the zoo's figures); *profile*: discounted by the dataset's profile, the clean gaps read over its gap "
        "ratios. *+ second scan*: where the verdict is "
        "borderline, the labels the model's other seed flags join (second_scan.md's replay). Exact: infected scans "
        "flagging exactly their targets; clean: clean scans flagging anything. *unchecked*: scans with a flagged "
        "label no cached symmetric check covers (it stays flagged). The 100- and 1000-label tasks have no profile "
        "and are left out.\n",
    ]
    body = []
    raw2, new2 = joined(rows, "flagged"), joined(rows, "profile_flagged")
    for half in ("tune", "test"):
        for dataset in [*sorted(PROFILED), "all"]:
            sel = [r for r in rows if r["half"] == half and r["dataset"] in PROFILED]
            sel = [r for r in sel if dataset in ("all", r["dataset"])]
            inf = [r for r in sel if r["targets"]]
            clean = [r for r in sel if not r["targets"]]
            body.append(
                [
                    half,
                    dataset,
                    count(inf, lambda r: r["flagged"] == r["targets"]),
                    count(inf, lambda r: r["profile_flagged"] == r["targets"]),
                    count(clean, lambda r: bool(r["flagged"])),
                    count(clean, lambda r: bool(r["profile_flagged"])),
                    count(inf, lambda r: raw2[scan_key(r)] == r["targets"]),
                    count(inf, lambda r: new2[scan_key(r)] == r["targets"]),
                    count(clean, lambda r: bool(raw2[scan_key(r)])),
                    count(clean, lambda r: bool(new2[scan_key(r)])),
                    sum(not r["profile_pairs_checked"] for r in sel),
                ]
            )
    lines.append(
        markdown_table(
            [
                "half",
                "dataset",
                "exact: raw",
                "exact: profile",
                "clean flagged: raw",
                "clean flagged: profile",
                "+ second scan, exact: raw",
                "+ second scan, exact: profile",
                "+ second scan, clean: raw",
                "+ second scan, clean: profile",
                "unchecked (profile)",
            ],
            body,
        )
    )
    lines.append("\n## Seeds agreeing (required families, models with both seeds)\n")
    agree = []
    for half in ("tune", "test"):
        models = defaultdict(dict)
        for r in rows:
            if r["half"] == half and r["dataset"] in PROFILED:
                models[r["model"]][r["seed"]] = r
        pairs = [m for m in models.values() if len(m) == 2]
        row = [half, len(pairs)]
        for key, flags in (("flagged", raw2), ("profile_flagged", new2)):
            row.append(sum(bool(m[0][key]) == bool(m[1][key]) for m in pairs))
            row.append(sum(m[0][key] == m[1][key] for m in pairs))
            j = [(flags[(m[0]["model"], 0)], flags[(m[0]["model"], 1)]) for m in pairs]
            row.append(sum(a == b for a, b in j))
        agree.append(row)
    lines.append(
        markdown_table(
            [
                "half",
                "models",
                "raw: same verdict",
                "raw: same labels",
                "raw + second scan: same labels",
                "profile: same verdict",
                "profile: same labels",
                "profile + second scan: same labels",
            ],
            agree,
        )
    )
    return "\n".join(lines)


def main() -> None:
    if rewrite_report(STEM, table):
        return
    rows = measure()
    write_results(STEM, rows, table(rows))
    print(table(read_results(STEM)))


if __name__ == "__main__":
    main()
