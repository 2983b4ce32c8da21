"""Write docs/benchmarks.md from benchmarks/results/*.json: one section per results file, saying what it
measures, the command that regenerates it, the machine its rows record, and a table of its rows.

    python benchmarks/docs.py            (or: make docs)

Reads only the results files; runs no benchmark. A results file without an entry in ``SECTIONS`` still gets a
section, with a table of its plain fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
OUTPUT = ROOT.parent / "docs" / "benchmarks.md"

Row = dict[str, Any]
Column = tuple[str, Callable[[Row], Any]]


# ---------------------------------------- cell formats


def num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; a list as ``a / b``; None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, list):
        return " / ".join(num(v, digits) for v in value) if value else "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def pct(value: Any) -> str:
    """A fraction as a percentage with two decimals; a list as ``a / b``."""
    if value is None:
        return "—"
    if isinstance(value, list):
        return " / ".join(pct(v) for v in value) if value else "—"
    return f"{100 * value:.2f}%"


def before_after(row: Row, key: str, fmt: Callable[[Any], str] = pct) -> str:
    before, after = row.get(f"{key}_before"), row.get(f"{key}_after")
    return "—" if before is None and after is None else f"{fmt(before)} → {fmt(after)}"


def right(row: Row) -> str:
    return "yes" if row.get("correct") else "**no**"


def flagged(row: Row) -> str:
    return "—" if row.get("flagged") is None else str(row["flagged"])


def searches(row: Row) -> str:
    """A number, or "default": the mode's default when the row was run (not recorded)."""
    return "default" if row.get("searches") is None else str(row["searches"])


def if_infected(key: str, digits: int = 4) -> Callable[[Row], str]:
    return lambda r: num(r.get(key), digits) if r.get("infected", True) else "—"


def seconds(row: Row) -> str:
    text = num(row.get("seconds"))
    return f"{text} (extrapolated)" if row.get("extrapolated") else text


def triggers(row: Row) -> str:
    return "; ".join(f"{t['spec']} → {t['target']}" for t in row.get("triggers") or []) or "—"


# ---------------------------------------- what each results file holds


@dataclass(frozen=True)
class Section:
    title: str
    measures: str
    command: str
    columns: list[Column]
    note: str = ""  # where the CPU is known from the record of the run but not from the rows
    keep: Callable[[Row], bool] = lambda r: True  # the rows tabled (a file may hold a summary row too)


HELD_OUT_COLUMNS: list[Column] = [
    ("model", lambda r: r["model"]),
    ("attack", lambda r: r.get("attack") or "none"),
    ("triggers → targets", triggers),
    ("seed", lambda r: r["seed"]),
    ("clean accuracy", lambda r: pct(r.get("clean_accuracy"))),
    ("attack success", lambda r: pct(r.get("attack_success"))),
    ("anomaly index", lambda r: num(r.get("anomaly_index"))),
    ("flagged", flagged),
    ("right", right),
    ("target norm", lambda r: num(r.get("target_l1"), 3)),
    ("median norm", lambda r: num(r.get("median_l1"))),
    ("true trigger norm", lambda r: num(r.get("true_l1"), 3)),
    ("target mask IoU", lambda r: num(r.get("target_iou"), 3)),
    ("seconds", lambda r: num(r.get("seconds"))),
]


#: The rows of held_out and held_out_threads1 were written in one session on one machine.
HELD_OUT_CPU = "The session that wrote these rows ran on a 2-core Intel Xeon with AMX, computing in bfloat16."


SCAN_COLUMNS: list[Column] = [
    ("model", lambda r: r["model"]),
    ("mode", lambda r: r["mode"]),
    ("searches per label", searches),
    ("seed", lambda r: r["seed"]),
    ("images", lambda r: r.get("num_images")),
    ("seconds", seconds),
    ("CPU seconds", lambda r: num(r.get("cpu_seconds"))),
    ("anomaly index", lambda r: num(r.get("anomaly_index"))),
    ("flagged", flagged),
    ("right", lambda r: "—" if r.get("extrapolated") else right(r)),
    ("target norm", if_infected("target_l1")),
    ("median norm", lambda r: num(r.get("median_l1"))),
    ("image passes per label", lambda r: num(r.get("image_passes_per_label"))),
    ("target mask IoU", if_infected("target_iou", 3)),
]

SCAN_MEASURES = (
    "Scans of the models of the paper's BadNets table (a white 4x4 square in the bottom-right corner; MNIST "
    "target 7, GTSRB target 33) and of their clean twins, with 1000 clean test images (989 for GTSRB: 23 per "
    "label). A row is one scan: its wall and CPU time, the verdict, whether exactly the true target was "
    "flagged (nothing, for a clean model), the reversed target mask's L1 norm against the median, the stamped "
    "images passed forward and backward per label, and the IoU of the target's reversed mask with the true "
    "trigger. Reference-mode rows marked extrapolated searched only some labels; their time is scaled to all "
    "labels and they give no verdict."
)

SECTIONS: dict[str, Section] = {
    "train": Section(
        "Training the benchmark models",
        "The BadNets models of the paper's Table I and their clean twins, trained with `neuralcleanse train`'s "
        "defaults (MNIST 3 epochs, GTSRB 12), seed 0. Clean accuracy on the test split; attack success on test "
        "images not of the target label. Paper: MNIST 98.5% / 99.9%, GTSRB 96.5% / 97.4%. "
        "`gtsrb-badnets` is poisoned at 20% (`POISON_RATES` in `benchmarks/common.py` says why), "
        "`gtsrb-badnets-p10` at the paper's 10%.",
        "make bench-train",
        [
            ("model", lambda r: r["model"]),
            ("poison rate", lambda r: num(r.get("poison_rate")) if r.get("infected") else "—"),
            ("target", lambda r: r.get("target") if r.get("infected") else "—"),
            ("epochs", lambda r: r.get("epochs")),
            ("clean accuracy", lambda r: pct(r.get("clean_accuracy"))),
            ("attack success", lambda r: pct(r.get("attack_success")) if r.get("infected") else "—"),
            ("seconds", lambda r: num(r.get("seconds"))),
        ],
        "The README at the time of these runs names a 2-core Xeon with AMX.",
    ),
    "scan_speed": Section(
        "Scan speed and verdicts",
        SCAN_MEASURES + " Fast mode runs seeds 0-2; reference mode is the original code's settings.",
        "make bench-scan",
        SCAN_COLUMNS,
        "The README at the time of these runs names a 2-core Xeon with AMX.",
    ),
    "scan_thorough": Section(
        "Three searches per label",
        SCAN_MEASURES + " Fast mode with `--searches 3` instead of the default 2.",
        "make bench-thorough",
        SCAN_COLUMNS,
        "The README at the time of these runs names a 2-core Xeon with AMX.",
    ),
    "scan_retrained": Section(
        "Scans of a second training of the GTSRB models",
        SCAN_MEASURES + " The GTSRB models trained again with the same recipe and seed on another machine (not "
        "bit-identical: 96.42% / 97.52%, clean 96.99%), scanned in fast mode (seeds 0-2) and, for the "
        "20%-poisoned model, in reference mode on all 43 labels.",
        "make bench-train (on the new machine), then python benchmarks/scan_speed.py --output scan_retrained "
        "--models gtsrb-badnets,gtsrb-clean --reference-full gtsrb",
        SCAN_COLUMNS,
        "The commits that added these rows name a 2-core AMD EPYC with AVX512-BF16.",
    ),
    "searches_per_label": Section(
        "Verdicts by number of searches per label",
        "Every label searched 6 times from independent random starts (fast-mode settings, seed 0). A k-search "
        "scan keeps each label's smallest valid mask among k of the 6 searches, so every k-subset is one possible "
        "scan. A row gives, for one model and k, the anomaly index over all k-subsets, the share of them above 3 "
        "and the share whose verdict is exactly right, and the median norm and 1.4826 x MAD of the 6-search "
        "ceiling's subsets. The 6 searches share their mini-batches, so the spread is indicative, not a "
        "calibrated probability.",
        "make bench-searches",
        [
            ("model", lambda r: r["model"]),
            ("searches per label", lambda r: r["searches"]),
            ("scans (subsets)", lambda r: r["scans"]),
            ("anomaly index min / median / max", lambda r: num([r["index_min"], r["index_median"], r["index_max"]], 3)),
            ("share > 3", lambda r: num(r.get("above_3"), 3)),
            ("verdict right", lambda r: num(r.get("verdict_right"), 3)),
            ("median norm", lambda r: num(r.get("median_l1"))),
            ("1.4826 x MAD", lambda r: num(r.get("scaled_mad_l1"))),
        ],
        "The README at the time of these runs names a 2-core Xeon with AMX.",
    ),
    "many_labels": Section(
        "Scan cost against the number of labels",
        "A task with 10^d labels built from MNIST: d digits side by side (28 x 28d pixels), labelled with the "
        "number they spell; the paper's MNIST network widened to the image. The BadNets models are poisoned at "
        "10% with the 4x4 white square over the last digit. Each model is scanned in fast mode with the same "
        "1000 clean test images.",
        "make bench-many-labels",
        [
            ("labels", lambda r: r["num_labels"]),
            ("model", lambda r: "BadNets" if r.get("infected") else "clean"),
            ("seed", lambda r: r["seed"]),
            ("clean accuracy", lambda r: pct(r.get("clean_accuracy"))),
            ("attack success", lambda r: pct(r.get("attack_success"))),
            ("scan seconds", lambda r: num(r.get("seconds"))),
            ("CPU seconds", lambda r: num(r.get("cpu_seconds"))),
            ("seconds per label", lambda r: num(r.get("seconds_per_label"), 3)),
            ("image passes per label", lambda r: r.get("image_passes_per_label")),
            ("anomaly index", lambda r: num(r.get("anomaly_index"))),
            ("flagged", flagged),
            ("right", right),
            ("target norm / median", lambda r: f"{num(r.get('target_l1'), 3)} / {num(r.get('median_l1'), 4)}"),
            ("target mask IoU", lambda r: num(r.get("target_iou"), 3)),
        ],
    ),
    "held_out": Section(
        "Models the fast-mode settings were not chosen on",
        "Fast scans (seeds 0-2) of models unlike the BadNets-table ones: other BadNets triggers on MNIST (a "
        "random 5x5 patch, a full-image blend at opacity 0.1, two triggers for two targets), Trojan models "
        "(TrojanNN) on MNIST and GTSRB, and BadNets, Trojan and clean CIFAR-10 models (GTSRB network trained "
        "on 90% of the CIFAR-10 test split, the only split available, and scanned with the rest). A row is right "
        "when exactly the true targets are flagged. The suite was committed before its first run.",
        "make bench-held-out",
        HELD_OUT_COLUMNS,
        HELD_OUT_CPU,
    ),
    "held_out_threads1": Section(
        "The held-out models with one torch thread",
        "The scans of `held_out` run again with one torch thread instead of torch's default (two on the 2-core "
        "machines here): the same models, seeds and settings, another order of arithmetic.",
        "PYTHONPATH=src python benchmarks/held_out.py --threads 1",
        HELD_OUT_COLUMNS,
        HELD_OUT_CPU,
    ),
    "precision": Section(
        "The fast scan in float32 and in bfloat16",
        "The same models and seeds scanned with `--precision float32` and `--precision bfloat16`. "
        "`transfer gap`: the largest difference, over the labels, between the share of the scan images a "
        "label's kept trigger sends to it in float32 and in bfloat16 (measured on MNIST). A small gap with "
        "different verdicts means the search took another path, not that the triggers differ.",
        "make bench-precision",
        [
            ("model", lambda r: r["model"]),
            ("seed", lambda r: r["seed"]),
            ("precision", lambda r: r["precision"]),
            ("computed in", lambda r: r.get("compute_dtype")),
            ("anomaly index", lambda r: num(r.get("anomaly_index"))),
            ("flagged", flagged),
            ("right", right),
            ("median norm", lambda r: num(r.get("median_l1"))),
            ("MAD", lambda r: num(r.get("mad_l1"))),
            ("transfer gap", lambda r: num(r.get("transfer_gap"), 3)),
            ("seconds", lambda r: num(r.get("seconds"))),
        ],
        "The commit that added these rows names a 2-core AMD EPYC with AVX512-BF16.",
    ),
    "mitigation": Section(
        "Mitigation with the reversed trigger",
        "For each infected benchmark model: a fast scan (seed 0), then each method through the same function as "
        "`neuralcleanse mitigate`, on the training split, measured on the test split. Attack success is the "
        "true trigger's on test images not of the target label; for the filter, the share of triggered inputs "
        "that pass the filter and reach the target. Targets: filter FNR <= 1.63% at 5% FPR (the paper's, "
        "Section VI); pruning success <= 5% for <= 5 points; unlearning success <= 2% for <= 1 point (ours; the "
        "paper's bound is < 6.7% for < 3.6 points).",
        "make bench-mitigation",
        [
            ("model", lambda r: r["model"]),
            ("method", lambda r: r["method"]),
            ("layer", lambda r: r.get("layer") or "—"),
            ("clean accuracy", lambda r: before_after(r, "clean_accuracy")),
            ("attack success", lambda r: before_after(r, "attack_success")),
            ("reversed trigger success", lambda r: before_after(r, "reversed_attack_success")),
            ("FPR", lambda r: pct(r.get("false_positive_rate"))),
            ("FNR", lambda r: pct(r.get("false_negative_rate"))),
            ("met target", lambda r: "yes" if r.get("meets_target") else "**no**"),
            ("seconds", lambda r: num(r.get("seconds"))),
        ],
        "The README at the time of these runs names a 2-core Xeon with AMX for the BadNets rows and a 2-core "
        "AMD EPYC with AVX512-BF16 for the Trojan rows.",
    ),
    "demo": Section(
        "The demo from an empty cache",
        "`neuralcleanse demo --precision float32` with an empty model cache: both demo models trained (one epoch, "
        "`DEMO_EPOCHS`), then both scanned in float32, as on a CPU without native bfloat16. One row per demo "
        "model; the demo's wall-clock and CPU seconds are the whole run's (every row holds the same). Wall-clock "
        "time on a shared machine depends on its load, recorded with the run; CPU seconds do not.",
        "make bench-demo",
        [
            ("model", lambda r: r["model"]),
            ("epochs", lambda r: r.get("epochs")),
            ("clean accuracy", lambda r: pct(r.get("clean_accuracy"))),
            ("attack success", lambda r: pct(r.get("attack_success"))),
            ("flagged", lambda r: str(r.get("flagged") or "none")),
            ("anomaly index", lambda r: num(r.get("anomaly_index"))),
            ("train s", lambda r: num(r.get("train_seconds"))),
            ("scan s", lambda r: num(r.get("scan_seconds"))),
            ("demo wall s", lambda r: num(r.get("demo_wall_seconds"))),
            ("demo CPU s", lambda r: num(r.get("demo_cpu_seconds"))),
            ("load average", lambda r: num(r.get("load_average_before"), 2)),
        ],
    ),
}

SECTIONS["zoo_scale"] = Section(
    "Scanning a zoo: throughput, Ray's overhead, label sharding",
    "Copies of the Keras BadNets MNIST model scanned as a zoo (fast mode, default settings): in process (the "
    "workers are torch's threads) and on a local Ray (tasks of one CPU); models per hour, a task's own time "
    "(loading and scanning) and the overhead per model (run time × workers / models − task time). Then the "
    "1000-label numbers_net(3), untrained, searched for a few epochs with 1 and 2 label shards (Ray actors): "
    "seconds and whether the flagged labels agree. The last row: the per-model cost the 1,000-model projection "
    "in `zoo_scale.md` starts from.",
    "make bench-zoo",
    [
        ("kind", lambda r: r["kind"]),
        ("engine", lambda r: r.get("engine", "ray" if r["kind"] == "labels" else "—")),
        ("workers or shards", lambda r: r.get("workers", r.get("shards"))),
        ("models", lambda r: r.get("models")),
        ("models per hour", lambda r: num(r.get("models_per_hour"))),
        ("task seconds", lambda r: num(r.get("task_seconds_mean"))),
        ("overhead s per model", lambda r: num(r.get("overhead_seconds_per_model"))),
        ("seconds", lambda r: num(r.get("wall_seconds", r.get("seconds")))),
        ("flagged", lambda r: num(r.get("flagged")) if r["kind"] == "labels" else num(r.get("verdicts"))),
        ("core seconds per model", lambda r: num(r.get("per_model_core_seconds"))),
    ],
    "The machine was shared with other jobs during the run (load average above 10 on 2 cores).",
)

SECTIONS["compactness"] = Section(
    "Compactness of reversed masks, and a trial rule",
    "The zoo scans that recorded every label's mask compactness (the share of its L1 mass in its densest window a "
    "quarter of the image wide), default arithmetic: the verdict as zoo_report.py decides it, and beside it a trial "
    "rule that also flags an unflagged label under a share of the median norm whose compactness reaches a level "
    "(exact: infected scans flagging exactly their targets; clean flagged: clean scans flagging anything). The "
    'per-dataset table is in benchmarks/results/compactness.md (docs/detection.md, "Signals tried beyond the norm").',
    "python benchmarks/compactness.py",
    [
        ("level", lambda r: r["level"]),
        ("ratio", lambda r: r["ratio"]),
        ("tune exact", lambda r: r["tune exact"]),
        ("tune clean flagged", lambda r: r["tune clean flagged"]),
        ("test exact", lambda r: r["test exact"]),
        ("test clean flagged", lambda r: r["test clean flagged"]),
        ("scans", lambda r: r["scans"]),
    ],
)

SECTIONS["decision_null"] = Section(
    "The decisions on clean models, simulated",
    "No model: clean label norms drawn from a log-normal (median 50, log spread sigma 0.3 to 1) for 10, 43, 100 "
    "and 1000 labels, 200 draws each; the share of draws in which each decision flags anything (no symmetric "
    "check): the paper's index, the k-aware test, the default k-aware-ratio, the default with its size floor "
    "weakened to p < 0.1, and the size criterion without a floor. Bounds what the size criterion can cost on "
    "clean models with many or widely spread labels (docs/detection.md).",
    "python benchmarks/decision_null.py",
    [
        ("labels", lambda r: r["labels"]),
        ("sigma", lambda r: r["sigma"]),
        ("paper", lambda r: num(r["paper"])),
        ("k-aware", lambda r: num(r["k-aware"])),
        ("k-aware-ratio (default)", lambda r: num(r["k-aware-ratio"])),
        ("floor p < 0.1", lambda r: num(r["floor p < 0.1"])),
        ("size alone", lambda r: num(r["size alone"])),
    ],
    "Simulation only: the machine does not change the figures.",
)

SECTIONS["decision_variants"] = Section(
    "Variants of the size criterion",
    "The default decision's block rule against the variants tried (docs/detection.md, how the defaults were "
    "chosen), each decided from the zoo's cached norms and symmetric checks (required families: exact targets "
    "and clean scans flagged, per half) and on the simulated clean models of decision_null (200 draws; the share "
    "flagged at the widest spreads shown).",
    "python benchmarks/decision_variants.py",
    [
        ("variant", lambda r: r["variant"]),
        ("tune TPR", lambda r: r["tune TPR"]),
        ("tune FPR", lambda r: r["tune FPR"]),
        ("test TPR", lambda r: r["test TPR"]),
        ("test FPR", lambda r: r["test FPR"]),
        ("test AUROC", lambda r: num(r["test AUROC"])),
        *(
            (f"simulated {key}", lambda r, key=key: num(r["simulated clean flagged"][key]))
            for key in ("K=10 sigma=1", "K=43 sigma=0.7", "K=100 sigma=1", "K=1000 sigma=1")
        ),
    ],
    "Replays and simulation only: the machine does not change the figures.",
)

SECTIONS["seed_noise"] = Section(
    "Seed-to-seed noise: the clean sample against the search",
    "Tune-half zoo models (MNIST and CIFAR-10; half of them chosen because their two zoo scans flag different "
    "labels) scanned with the clean sample of one seed and the search seeded by another, with 2 and 3 searches "
    "per label and with an attack-success threshold of 0.9 instead of 0.99; one row per scan. The summary (how "
    "much each source moves a label's norm over the median, how often the verdicts agree) is in "
    'benchmarks/results/seed_noise.md (docs/detection.md, "How steady a verdict is").',
    "python benchmarks/seed_noise.py",
    [
        ("model", lambda r: r["model"]),
        ("targets", lambda r: r["targets"]),
        ("sample seed", lambda r: r["sample_seed"]),
        ("search seed", lambda r: r["search_seed"]),
        ("searches per label", lambda r: r["searches"]),
        ("success threshold", lambda r: r["success_threshold"]),
        ("flagged", lambda r: r["flagged"]),
        ("exact", lambda r: "yes" if r["flagged"] == r["targets"] else "no"),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["success_threshold"] = Section(
    "The zoo's tune half searched at an attack-success threshold of 0.9",
    "Every tune-half zoo model trained on this machine (the many-label ones left out), both scan seeds, the defaults "
    "but a threshold of 0.9 instead of 0.99; one row per scan. The comparison with the default's scans of the same "
    'models is in benchmarks/results/success_threshold.md (docs/detection.md, "What a lower attack-success '
    'threshold gives").',
    "python benchmarks/success_threshold.py --half tune",
    [
        ("model", lambda r: r["model"]),
        ("family", lambda r: r["family"]),
        ("seed", lambda r: r["seed"]),
        ("targets", lambda r: r["targets"]),
        ("flagged", lambda r: r.get("flagged")),
        ("exact", lambda r: "yes" if r.get("correct") else "no"),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["mask_truncation"] = Section(
    "The zoo's reversed masks cut to their strongest pixels",
    "Every default zoo scan whose masks and patterns are stored and whose model is on disk: per label, the "
    "search's norm and the norm of the smallest cut of its mask (its largest pixels kept) whose attack success "
    "reaches 0.9 and 0.97 of the whole mask's; one row per scan, labels in order. The noise between seeds and the "
    'decision on each kind of norm are in benchmarks/results/mask_truncation.md (docs/detection.md, "How steady a '
    'verdict is").',
    "python benchmarks/mask_truncation.py",
    [
        ("model", lambda r: r["model"]),
        ("seed", lambda r: r["seed"]),
        ("half", lambda r: r["half"]),
        ("search's norms", lambda r: num(r["norms"], 3)),
        ("cut to 0.9", lambda r: num(r["truncated"]["0.9"], 3)),
        ("cut to 0.97", lambda r: num(r["truncated"]["0.97"], 3)),
    ],
    "Measured on stored masks: the machine does not change the figures.",
)

SECTIONS["fitted_rules"] = Section(
    "Decisions fitted to the tune half",
    "The zoo's required families, default arithmetic, flagged labels judged by the cached symmetric checks, per "
    "half: the default, one cut on the ratio to the median and a logistic rule per position, both chosen on the "
    'tune half (docs/detection.md, "What the zoo shows").',
    "python benchmarks/fitted_rules.py",
    [
        ("decision", lambda r: r["decision"]),
        ("setting", lambda r: num(r["setting"]) or "—"),
        ("half", lambda r: r["half"]),
        ("exact targets", lambda r: r["exact"]),
        ("clean scans flagged", lambda r: num(r.get("clean flagged"))),
        ("flags without a cached check", lambda r: num(r.get("unchecked scans"))),
    ],
    "Decided from the zoo's stored norms: the machine does not change the figures.",
)

SECTIONS["weak_attacks"] = Section(
    "The zoo's backdoors that did not take, scanned anyway",
    "Every zoo model on disk with a trigger under 90% attack success (left out of the zoo's detection figures), "
    "scanned with the defaults on the zoo's scan seeds: per trigger its attack success, its target's norm over "
    "the scan's median norm and whether the target was flagged, and the other labels flagged "
    '(docs/detection.md, "What the zoo shows").',
    "python benchmarks/weak_attacks.py",
    [
        ("model", lambda r: r["model"]),
        ("seed", lambda r: r["seed"]),
        ("poison rate", lambda r: num(r["poison_rate"])),
        ("attack success", lambda r: num([t["attack_success"] for t in r["triggers"]], 3)),
        ("target's norm / median", lambda r: num([t["norm_ratio"] for t in r["triggers"]], 2)),
        ("target flagged", lambda r: num([t["flagged"] for t in r["triggers"]])),
        ("other labels flagged", lambda r: num(r["others_flagged"])),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["blend_search"] = Section(
    "The blend search on zoo models",
    "Zoo models retrained on the machine that scans them, scanned with the default (mask search, then the blend "
    "search) on the zoo's scan seeds: the mask search's verdict (the previous default's), the blend verdict, the "
    "labels it clears and the scan's verdict, as the library that scanned each row decided them (rows scanned "
    "before the blend companions' conditions were added clear every companion or, later, every one with a natural "
    "blend norm); the targets' norms over each search's median. "
    "benchmarks/results/blend_search.md replays every row with the library's rule, and has the settings chosen on "
    'the tune half and the test half\'s figures (docs/detection.md, "Blend triggers: a second search").',
    "python benchmarks/blend_search.py scan, then python benchmarks/blend_search.py report",
    [
        ("model", lambda r: r["model"]),
        ("half", lambda r: r["half"]),
        ("seed", lambda r: r["seed"]),
        ("clean accuracy", lambda r: pct(r.get("clean_accuracy"))),
        ("targets", lambda r: num(r["targets"])),
        ("mask flagged", lambda r: num(r["mask_flagged"])),
        ("blend flagged", lambda r: num(r["blend_flagged"])),
        ("cleared", lambda r: num(r["blend_cleared"])),
        ("flagged", lambda r: num(r["flagged"])),
        ("targets' blend norm / median", lambda r: num([_ratio(r["blend_norms"], t) for t in r["targets"]], 2)),
        ("targets' mask norm / median", lambda r: num([_ratio(r["norms"], t) for t in r["targets"]], 2)),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["stimulation"] = Section(
    "Neuron stimulation on zoo and held-out models",
    "Each model's labels stimulated as a scan does (stimulation.scan_stimulation, on the clean images of the zoo's "
    "scan with the row's seed, or held_out.py's): the layer stimulated and the four smallest ratios of a label's "
    "level to the median label's (* a target; flagged at 0.25 or under). Every model is loaded as a scan loads it: "
    "the zoo's own architectures are TorchScript, stimulated through their ONNX export; rows with a format other "
    "than native are the held-out models exported as TorchScript and ONNX files (--formats). "
    "benchmarks/results/stimulation.md has the sweep of ratios per half, the natural labels' smallest ratios and "
    'the zoo\'s verdicts joined with stimulation (docs/detection.md, "Trojans: neuron stimulation").',
    "python benchmarks/stimulation.py [--seed 1 --only ...] [--formats]",
    [
        ("model", lambda r: r["model"]),
        ("seed", lambda r: r.get("seed", 0)),
        ("format", lambda r: r.get("format", "native")),
        ("arch", lambda r: r["arch"]),
        ("half", lambda r: r["half"]),
        ("targets", lambda r: num(r["targets"])),
        ("layer", lambda r: r.get("layer") or "not stimulated"),
        (
            "smallest ratios",
            lambda r: (
                ", ".join(
                    f"{k}{'*' if k in r['targets'] else ''}: {v:.2f}"
                    for k, v in sorted(
                        ((k, v) for k, v in enumerate(r.get("ratios") or []) if v is not None), key=lambda kv: kv[1]
                    )[:4]
                )
                or "—"
            ),
        ),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["blend_restarts"] = Section(
    "One blend search per label or the smaller of two",
    "The scans of blend_search.json (the many-label task's aside), each label's blend search run twice more with a "
    "fresh draw; the verdict replayed from the scan's mask search at the default ratio with the scan's own blend "
    "search, with the first fresh one, and with the smaller of both; the targets' blend norms over the median "
    '(docs/detection.md, "Blend triggers: a second search").',
    "python benchmarks/blend_restarts.py, then python benchmarks/blend_restarts.py report",
    [
        ("model", lambda r: r["model"]),
        ("half", lambda r: r["half"]),
        ("seed", lambda r: r["seed"]),
        ("targets", lambda r: num(r["targets"])),
        ("one search", lambda r: num(r["one_search"])),
        ("two searches", lambda r: num(r["two_searches"])),
        ("targets' ratio, one", lambda r: num(r["target_ratio_one"], 2)),
        ("targets' ratio, two", lambda r: num(r["target_ratio_two"], 2)),
    ],
)

SECTIONS["blend_mitigation"] = Section(
    "Unlearning a blend backdoor with its blend trigger or its mask trigger",
    "MNIST blend models (the zoo's on disk and the held-out mnist-blend), scanned with the default (seed 0); the "
    "target's mask trigger and blend trigger each unlearn a copy of the model with the same images and seed. Clean "
    "accuracy and the true trigger's attack success before / after (docs/how-it-works.md, \"Mitigation results and "
    "misses\"); *scan's trigger*: the one `ScanReport.trigger` and `neuralcleanse mitigate` use.",
    "python benchmarks/blend_mitigation.py",
    [
        ("model", lambda r: r["model"]),
        ("target", lambda r: r["target"]),
        ("mask flagged", lambda r: num(r["mask_flagged"])),
        ("blend flagged", lambda r: num(r["blend_flagged"])),
        ("unlearned with", lambda r: r["trigger"] or "not flagged"),
        ("scan's trigger", lambda r: num(r.get("chosen"))),
        ("clean accuracy", lambda r: pct(r.get("clean_accuracy"))),
        ("attack success", lambda r: pct(r.get("attack_success"))),
        ("seconds", lambda r: num(r.get("seconds"))),
    ],
)

SECTIONS["multi_target_mitigation"] = Section(
    "Repairing a backdoor with several targets: every flagged label's trigger or the first one's",
    "MNIST two- and three-target zoo models, scanned with the default (seed 0); for unlearning, pruning and the "
    "input filter, one repair with the first flagged label's reversed trigger, another with every flagged label's. "
    "Clean accuracy and each true trigger's attack success (in the order of the targets) before / after (behind the "
    "filter: accepted and correct, accepted and sent to the target) "
    '(docs/how-it-works.md, "Mitigation results and misses").',
    "python benchmarks/multi_target_mitigation.py",
    [
        ("model", lambda r: r["model"]),
        ("targets", lambda r: num(r["targets"])),
        ("flagged", lambda r: num(r["flagged"])),
        ("method", lambda r: r.get("method") or "—"),
        ("labels repaired", lambda r: num(r["repaired"]) if r["repaired"] else "not flagged"),
        ("clean accuracy", lambda r: pct(r.get("clean_accuracy"))),
        ("attack success before", lambda r: pct(r["attack_success"][0]) if r.get("attack_success") else "—"),
        ("attack success after", lambda r: pct(r["attack_success"][1]) if r.get("attack_success") else "—"),
        ("seconds", lambda r: num(r.get("seconds"))),
    ],
)

SECTIONS["rescan"] = Section(
    "The zoo's models on disk scanned again with today's default",
    "Each model of the zoo on disk (per half; the 1000-label task left out) scanned with the default ScanConfig "
    "(mask search, blend search, neuron stimulation) on the clean images and seed of its zoo scan, beside zoo.json's "
    "recorded verdict of the same scan (the mask search of its time). benchmarks/results/rescan.md has the counts "
    "per task and half and the scans whose verdict changed.",
    "python benchmarks/rescan.py [--half test|tune] [--seed 0]",
    [
        ("model", lambda r: r["model"]),
        ("half", lambda r: r["half"]),
        ("seed", lambda r: r["seed"]),
        ("arch", lambda r: r["arch"]),
        ("targets", lambda r: str(r["targets"])),
        ("flagged", lambda r: str(r["flagged"])),
        (
            "mask / blend / stimulation",
            lambda r: " / ".join(str(r[k]) for k in ("mask_flagged", "blend_flagged", "stimulation_flagged")),
        ),
        ("right", lambda r: "yes" if r["correct"] else "no"),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["more_searches"] = Section(
    "More searches for the smallest labels, against the default",
    "The zoo's 10-label models on disk scanned with the default ScanConfig and more_searches set (the smallest labels, "
    "up to three under 0.8 of the median norm, searched that many times more), beside rescan.json's scans of the same "
    "models and seeds without them. benchmarks/results/more_searches.md has the counts per half and task "
    '(docs/detection.md, "Searching the smallest labels more").',
    "python benchmarks/more_searches.py [--half tune|test] [--seed 0] [--more 2]",
    [
        ("model", lambda r: r["model"]),
        ("half", lambda r: r["half"]),
        ("seed", lambda r: r["seed"]),
        ("more searches", lambda r: r["more_searches"]),
        ("targets", lambda r: str(r["targets"])),
        ("flagged", lambda r: str(r["flagged"])),
        ("right", lambda r: "yes" if r["correct"] else "no"),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["softmax_search"] = Section(
    "The search on models that end in a softmax: the clamp before the log",
    "The zoo's MNIST models whose network ends in a softmax (retrained from their recipes where not on disk), "
    "scanned with the default ScanConfig and MNIST's profile, their probabilities clamped at 1e-12 before the log "
    "(the scan before) and at the dtype's smallest normal number (the default), side by side. *Unreached*: labels "
    "whose search never reached the attack-success threshold. benchmarks/results/softmax_search.md has the counts "
    '(docs/how-it-works.md, "The search for one label").',
    "python benchmarks/softmax_search.py [--only NAME,...] [--seeds 0,1]",
    [
        ("model", lambda r: r["model"]),
        ("arch", lambda r: r["arch"]),
        ("half", lambda r: r["half"]),
        ("seed", lambda r: r["seed"]),
        ("clamp", lambda r: r["clamp"]),
        ("targets", lambda r: str(r["targets"])),
        ("flagged", lambda r: str(r["flagged"])),
        ("unreached", lambda r: str(r["unreached"])),
        ("right", lambda r: "yes" if r["correct"] else "no"),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["input_convention"] = Section(
    "A model trained on normalised input, scanned fed [0, 1]",
    "The zoo's models of the paper's MNIST network with their normalisation layer removed (so they expect input "
    "normalised by MNIST's mean and std), scanned fed [0, 1], as a scan given no preprocessing feeds a model that "
    "passes its accuracy check, and fed as trained, side by side; control rows: the zoo's MNIST models as trained, "
    'not scanned. benchmarks/results/input_convention.md has the counts (docs/formats.md, "Preprocessing").',
    "python benchmarks/input_convention.py; python benchmarks/input_convention.py controls",
    [
        ("model", lambda r: r["model"]),
        ("family", lambda r: r["family"]),
        ("seed", lambda r: r["seed"]),
        ("fed", lambda r: r["feed"]),
        ("accuracy, [0, 1]", lambda r: pct(r["accuracy"]["in [0, 1]"])),
        ("accuracy, normalised", lambda r: pct(r["accuracy"]["normalised by MNIST's mean and std"])),
        ("flagged", lambda r: str(r["flagged"]) if "flagged" in r else "—"),
        ("right", lambda r: ("yes" if r["correct"] else "no") if "correct" in r else "—"),
        ("seconds", lambda r: num(r["seconds"]) if "seconds" in r else "—"),
    ],
)

SECTIONS["sample_size"] = Section(
    "How many clean images a verdict needs",
    "The zoo's models on disk whose attack took, scanned with the zoo's clean sample (100 images per label on "
    "MNIST, 87 on CIFAR-10, 23 on GTSRB) and with 30 and 10 images per label, side by side on the same models and "
    'seeds. benchmarks/results/sample_size.md has the counts (docs/how-it-works.md, "Scan inputs").',
    "python benchmarks/sample_size.py",
    [
        ("model", lambda r: r["model"]),
        ("half", lambda r: r["half"]),
        ("seed", lambda r: r["seed"]),
        ("images per label", lambda r: r["images_per_label"]),
        ("targets", lambda r: str(r["targets"])),
        ("flagged", lambda r: str(r["flagged"])),
        ("right", lambda r: "yes" if r["correct"] else "no"),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["true_start"] = Section(
    "Searches from the true trigger beside the default's",
    "Each target of the zoo's patch, pixel, random-pattern and several-target models on disk: its norm over the "
    "median label's as the default mask search found it (seed 0) and from one search started at the true trigger, "
    "the smallest natural label's, and whether the default scan flags it (rescan.json, seed 0).",
    "python benchmarks/true_start.py",
    [
        ("model", lambda r: r["model"]),
        ("half", lambda r: r["half"]),
        ("target", lambda r: r["target"]),
        ("scan / median", lambda r: num(r["scan_norm"] / r["median"], 3)),
        (
            "true start / median",
            lambda r: "—" if r["true_start_norm"] is None else num(r["true_start_norm"] / r["median"], 3),
        ),
        ("smallest natural / median", lambda r: num(r["natural_smallest"] / r["median"], 3)),
        ("flagged by default", lambda r: {True: "yes", False: "no", None: "—"}[r["flagged_by_default"]]),
        ("seconds", lambda r: num(r["seconds"])),
    ],
)

SECTIONS["default_speed"] = Section(
    "The default scan's time beside the previous defaults'",
    "Zoo models scanned in one run with the paper's decision, the previous default (the mask search alone) and "
    "the default (mask and blend searches), alternating, with the same seeds: each scan's seconds, its clean-gap "
    "pass timed alone, the flagged labels and the symmetric checks it ran. Medians per dataset and their ratios are "
    "in benchmarks/results/default_speed.md.",
    "python benchmarks/default_speed.py",
    [
        ("model", lambda r: r["model"]),
        ("config", lambda r: r["config"]),
        ("seed", lambda r: r["seed"]),
        ("seconds", lambda r: num(r["seconds"])),
        ("clean-gap pass s", lambda r: num(r.get("gap_seconds"))),
        ("flagged", lambda r: num(r["flagged"])),
        ("symmetric checks", lambda r: r["pair_checks"]),
        ("arithmetic", lambda r: r["compute_dtype"]),
    ],
)


def _ratio(norms: list[float], label: int) -> float:
    ordered = sorted(norms)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else ordered[middle - 1]  # torch.median's lower middle
    return norms[label] / median


SECTIONS["steadiness"] = Section(
    "Steadiness of the zoo's verdicts, replayed",
    "Every default zoo scan of a model scanned with both seeds: whether its model's two seeds reach different "
    "verdicts, whether the scan flags exactly its targets, and its steadiness (neuralcleanse.steadiness) at the "
    "default noise and at the others tried. The summary per half, noise and warning level is in "
    'benchmarks/results/steadiness.md (docs/detection.md, "How steady a verdict is").',
    "python benchmarks/steadiness.py",
    [
        ("model", lambda r: r["model"]),
        ("seed", lambda r: r["seed"]),
        ("half", lambda r: r["half"]),
        ("seeds disagree", lambda r: "yes" if r["flips"] else "no"),
        ("exact", lambda r: "yes" if r["exact"] else "no"),
        *(
            (f"steadiness at {noise}", lambda r, noise=noise: num(r["steadiness"][noise]))
            for noise in ("0.1", "0.13", "0.18", "0.25")
        ),
    ],
    "Replays only: the machine does not change the figures.",
)

SECTIONS["settle"] = Section(
    "Borderline verdicts searched again",
    "Zoo models whose stored default scan is borderline (steadiness under 0.9), both seeds: the verdict of two "
    "searches per label (the default) and of two more of every label on the same draws, mask search, default "
    "decision and symmetric check; one row per scan. The summary (exact scans, seed agreement and time when the "
    "four-search verdict is kept where the two-search one was borderline) is in benchmarks/results/settle.md "
    '(docs/detection.md, "How steady a verdict is").',
    "python benchmarks/settle.py",
    [
        ("model", lambda r: r["model"]),
        ("seed", lambda r: r["seed"]),
        ("half", lambda r: r["half"]),
        ("targets", lambda r: num(r["targets"])),
        ("two searches: flagged", lambda r: num(r["flagged2"])),
        ("steadiness", lambda r: num(r["steadiness2"], 3)),
        ("four searches: flagged", lambda r: num(r["flagged4"])),
        ("steadiness", lambda r: num(r["steadiness4"], 3)),
        ("seconds (two searches)", lambda r: num(r["seconds2"], 3)),
        ("seconds", lambda r: num(r["seconds"], 3)),
    ],
)

SECTIONS["second_scan"] = Section(
    "A second scan of a borderline verdict",
    "The second scans (seeds 2 and 3, the next seeds but one, so that the policy verdicts of seeds 0 and 1 share no "
    "scan) of the models settle.py scanned: two searches per label, mask search, default decision and symmetric "
    "check; one row per scan. The policies (the labels either scan flags where the first is borderline, the "
    "labels both flag, one scan), replayed on the whole zoo and measured on these rescans, are in "
    'benchmarks/results/second_scan.md (docs/detection.md, "How steady a verdict is").',
    "python benchmarks/second_scan.py",
    [
        ("model", lambda r: r["model"]),
        ("seed", lambda r: r["seed"]),
        ("half", lambda r: r["half"]),
        ("targets", lambda r: num(r["targets"])),
        ("flagged", lambda r: num(r["flagged2"])),
        ("steadiness", lambda r: num(r["steadiness2"], 3)),
        ("seconds", lambda r: num(r["seconds2"], 3)),
    ],
)

SECTIONS["shipped"] = Section(
    "The scan as it ships, second scan included",
    "The fourteenth round's zoo models, the test half's earlier rounds on disk (MNIST, CIFAR-10 and a clean "
    "100-label model) and the fifteenth round's (read through the natural label profiles, as the scan job reads "
    "them since there are profiles), both seeds, scanned as `neuralcleanse scan` scans them: the default scan "
    "(mask search, symmetric checks, blend search, neuron stimulation) and, where its verdict is borderline, a "
    "second scan with the next seed and that seed's clean sample, joined; one row per scan. The summary per half "
    'is in benchmarks/results/shipped.md (docs/detection.md, "A second scan of a borderline verdict").',
    "python benchmarks/shipped.py",
    [
        ("model", lambda r: r["model"]),
        ("seed", lambda r: r["seed"]),
        ("half", lambda r: r["half"]),
        ("targets", lambda r: num(r["targets"])),
        ("first scan", lambda r: num(r["first_flagged"])),
        ("steadiness", lambda r: num(r["steadiness"], 3)),
        ("second scan", lambda r: num(r["second_flagged"])),
        ("shipped", lambda r: num(r["flagged"])),
        ("seconds", lambda r: num(r["seconds"], 3)),
    ],
)

SECTIONS["profiles"] = Section(
    "Natural label profiles",
    "The zoo's stored scans of its required families, replayed: the default decision and the cached symmetric "
    "checks on the norms as they are and on the norms read through the dataset's natural label profile (built "
    "from the tune half's clean models; a clean tune-half model is judged with the profile of the others); the "
    "rows of the scans whose flagged labels the profile changes. The profiles' own figures and the summary per "
    "half, with the second scan replayed, are in "
    'benchmarks/results/profiles.md (docs/detection.md, "Naturally small labels").',
    "python benchmarks/profiles.py",
    [
        ("model", lambda r: r["model"]),
        ("seed", lambda r: r["seed"]),
        ("half", lambda r: r["half"]),
        ("targets", lambda r: num(r["targets"])),
        ("profile", lambda r: r["profile"] or "—"),
        ("flagged, raw norms", lambda r: num(r["flagged"])),
        ("with the profile", lambda r: num(r["profile_flagged"])),
        ("steadiness, raw", lambda r: num(r["steadiness"], 3)),
        ("with the profile", lambda r: num(r["profile_steadiness"], 3)),
    ],
    keep=lambda r: "model" in r and r["flagged"] != r["profile_flagged"],
)

ORDER = list(SECTIONS)  # sections appear in this order; unknown files follow, by name


# ---------------------------------------- page


def machines(rows: list[Row]) -> str:
    """What the rows record about their machines, one phrase per distinct machine."""
    seen: dict[str, int] = {}
    for row in rows:
        m = row.get("machine")
        if not m:
            continue
        parts = [m.get("cpu") or m.get("processor") or "unknown CPU"]
        parts += [m["platform"]] if m.get("platform") else []
        parts += [f"{m['torch_threads']} torch threads"] if m.get("torch_threads") else []
        parts += [f"torch {m['torch']}"] if m.get("torch") else []
        parts.append(f"CUDA {m['cuda']}" if m.get("cuda") else "no CUDA")
        key = ", ".join(str(p) for p in parts)
        seen[key] = seen.get(key, 0) + 1
    if not seen:
        return "The rows record no machine."
    known_cpu = any(row.get("machine", {}).get("cpu") for row in rows)
    listed = "; ".join(f"{key} ({n} rows)" if len(seen) > 1 else key for key, n in seen.items())
    tail = "" if known_cpu else " The rows record the architecture, not the CPU model."
    return f"Machine recorded in the rows: {listed}.{tail}"


def plain_columns(rows: list[Row]) -> list[Column]:
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict | list)] if rows else []
    return [(k, lambda r, k=k: num(r.get(k))) for k in keys]


def table(columns: list[Column], rows: list[Row]) -> str:
    def cell(value: Any) -> str:
        return num(value).replace("|", "\\|")

    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(get(row)) for _, get in columns) + " |" for row in rows]
    return "\n".join(lines)


def section(stem: str, rows: list[Row]) -> str:
    spec = SECTIONS.get(stem)
    rows = [r for r in rows if spec.keep(r)] if spec else rows
    title = spec.title if spec else stem
    parts = [f"## {title}", f"`benchmarks/results/{stem}.json`, {len(rows)} rows."]
    if spec:
        parts.append(spec.measures)
        parts.append(f"Regenerate: `{spec.command}`.")
    parts.append(machines(rows) + (f" {spec.note}" if spec and spec.note else ""))
    parts.append(table(spec.columns if spec else plain_columns(rows), rows))
    return "\n\n".join(parts)


def render(results: Path = RESULTS) -> str:
    files = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    # Only row files are tabled; caches keyed by name (zoo_pairs.json) are inputs of other reports.
    files = {stem: rows for stem, rows in files.items() if isinstance(rows, list)}
    stems = [s for s in ORDER if s in files] + sorted(s for s in files if s not in SECTIONS)
    head = (
        "# Benchmarks\n\n"
        "Generated by `benchmarks/docs.py` (`make docs`) from `benchmarks/results/*.json`; do not edit by hand. "
        "Each section names the command that reruns its benchmark. What the figures mean, and what they leave "
        "out, is in [how-it-works.md](how-it-works.md).\n\n"
        "Fractions are shown as percentages; norms are L1 norms of the reversed masks; a **no** marks a wrong "
        "verdict or a missed target.\n\n"
        + "\n".join(f"- [{SECTIONS[s].title if s in SECTIONS else s}](#{anchor(s)})" for s in stems)
    )
    return "\n\n".join([head, *(section(s, files[s]) for s in stems)]) + "\n"


def anchor(stem: str) -> str:
    """The GitHub anchor of a section's title."""
    title = SECTIONS[stem].title if stem in SECTIONS else stem
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT.parent)}")


if __name__ == "__main__":
    main()
