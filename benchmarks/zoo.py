"""The detection benchmark zoo: train the models of benchmarks/zoo_recipes.json, then scan them.

    python benchmarks/zoo.py train [--only NAME,...] [--dataset D]
    python benchmarks/zoo.py scan [--seeds 0,1] [--only NAME,...] [--dataset D] [--half H] [--precision P]
        [--threads N]
    python benchmarks/zoo.py gaps [--only NAME,...] [--dataset D] [--half H]

``train`` trains every recipe not yet saved under runs/zoo/models/<name>/ (not committed), cheap and required
ones first: MNIST, CIFAR-10, GTSRB, the many-label task last. A model is written to a temporary folder and
renamed into place, so an interrupted run leaves no half model and the next run goes on where it stopped.
Library architectures are saved with ``save_model``; the zoo's own as TorchScript (``model.pt``) beside a
``model.json``, so the scanner loads every model without unpickling. Per model, benchmarks/results/zoo_models.json
gets the clean accuracy, the attack success per trigger, whether the attack took (success >= 0.90 for every
trigger), the seconds and the machine (rows merged by name). A model trained again because it is no longer on
disk (the models are not committed) keeps its recorded row: the retraining's figures are in its ``model.json``.

``scan`` runs ``NeuralCleanse(model).scan(images, labels, seed=s)`` with the library's defaults (the dataset's
built-in natural label profile included, for the scans made since there are profiles) on every trained
model whose attack took, with a stratified clean sample of the test split (for CIFAR-10, of the 10% held out of
training), and appends one row per (model, seed) to benchmarks/results/zoo_scans.json with the per-label mask
norms, attack success, clean gaps and mask compactness (and, where the row has them, the blend norms, the
verdict's steadiness and which search flagged what), so other decision rules can be tried on the stored norms
without rescanning; the masks and patterns themselves go to runs/zoo/masks/ (``<scan>.pt`` and
``<scan>.patterns.pt``, not committed). Rows already there are kept; a rerun scans only what is missing.
``gaps`` adds the clean gaps (``favour.clean_gaps`` of the model's outputs for the scan's images: they depend on
the model and the scan seed only) to the rows scanned before the scan recorded them; ``compactness`` scans such
rows again and adds the masks' compactness where the norms come out the same.

Training data and poisoning. MNIST and GTSRB: the official splits. CIFAR-10 (test split only here): 90% for
training, 10% held out, drawn from the recipe's seed as the library's ``training_split`` does. The many-label
task: d MNIST digits side by side labelled with the number they spell (benchmarks/many_labels.py's idea).
Triggers are stamped on each batch after augmentation (CIFAR-10: random crops and flips), so the attacker's
images are the ones the network sees. Families (see zoo_make_recipes.py): one or more (trigger, target) pairs
poisoned with ``poison``; Trojan models retrained from a clean zoo model with ``trojan``; source-specific
models see the source label's stamped images relabelled and as many stamped images of other labels that keep
their label; all-to-all models see stamped images of label i relabelled i + 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import many_labels
import torch
from common import machine, markdown_table, read_results, results_lock, write_results
from torch import nn
from zoo_archs import build, is_library_arch, logits_of

from neuralcleanse import (
    ImageData,
    NeuralCleanse,
    SanityCheckError,
    ScanConfig,
    ScanReport,
    Trigger,
    TrojanConfig,
    accuracy,
    attack_success_rate,
    builtin_profile,
    clean_sample,
    load_dataset,
    load_model,
    load_saved_model,
    parse_trigger,
    poison,
    predict,
    save_model,
    trojan,
)
from neuralcleanse.favour import clean_gaps
from neuralcleanse.metrics import outputs_of

ROOT = Path(__file__).resolve().parent
RECIPES = ROOT / "zoo_recipes.json"
ZOO_DIR = ROOT.parent / "runs" / "zoo" / "models"  # not committed: rebuilt by `zoo.py train`
MASKS_DIR = ROOT.parent / "runs" / "zoo" / "masks"  # every scan's reversed masks and patterns, for statistics to come
MODELS_FILE, SCANS_FILE = "zoo_models", "zoo_scans"

DATASET_ORDER = ("mnist", "cifar10", "gtsrb")  # training order: cheapest first
HELD_OUT = 0.1  # CIFAR-10's held-out share, as the library's training_split (neuralcleanse.workflows.HELD_OUT)
BATCH_SIZE = 128  # the library's TrainConfig default
LR = 1e-3  # Keras' Adam default, as the library's TrainConfig (cosine-decayed there and here)
CROP_PADDING = 4  # CIFAR-10's usual augmentation: random 32x32 crops of the image padded by 4, random flips
NUMBERS_TRAIN = 60_000  # composed training images per digit of the number, as benchmarks/many_labels.py
NUMBERS_TEST = 10_000  # composed test images, as benchmarks/many_labels.py
TOOK = 0.90  # attack success below this on any trigger: the attack did not take (the zoo's brief)
SCAN_SAMPLES = 1000  # clean images per scan: the original code's NB_SAMPLE


# ---------------------------------------- recipes and data


def recipes() -> list[dict[str, Any]]:
    """The recipes in training order: MNIST, CIFAR-10, GTSRB, required families first; many-label last."""
    rows = json.loads(RECIPES.read_text())
    return sorted(
        rows,
        key=lambda r: ("digits" in r, DATASET_ORDER.index(r["dataset"]), not r["required"], rows.index(r)),
    )


def recipe(name: str) -> dict[str, Any]:
    """The recipe called ``name``."""
    return next(r for r in recipes() if r["name"] == name)


def half(recipe: dict[str, Any]) -> str:
    return "tune" if recipe["seed"] % 2 == 0 else "test"


@functools.cache
def dataset(name: str, split: str) -> ImageData:
    return load_dataset(name, split)


def numbers(split: str, digits: int, count: int, seed: int) -> ImageData:
    """benchmarks/many_labels.py's composed numbers (the same draws), as an ImageData."""
    images, labels = many_labels.numbers(split, digits, count, seed)
    return ImageData(images, labels, 10**digits, f"numbers{digits}-{split}")


def task(recipe: dict[str, Any]) -> tuple[ImageData, ImageData]:
    """``(train, test)`` of a recipe: official splits, CIFAR-10's seeded 90/10 split, or composed numbers."""
    name, seed = recipe["dataset"], recipe["seed"]
    if "digits" in recipe:
        d = recipe["digits"]
        return numbers("train", d, NUMBERS_TRAIN * d, seed), numbers("test", d, NUMBERS_TEST, seed)
    if name == "cifar10":
        data = dataset(name, "test")
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        n_test = max(1, int(len(data) * HELD_OUT))
        return data.subset(order[n_test:]), data.subset(order[:n_test])
    return dataset(name, "train"), dataset(name, "test")


def model_dir(name: str) -> Path:
    return ZOO_DIR / name


def model_path(name: str) -> Path:
    """What the scanner loads: the TorchScript file, or the library's model folder."""
    script = model_dir(name) / "model.pt"
    return script if script.exists() else model_dir(name)


def is_trained(name: str) -> bool:
    return (model_dir(name) / "model.json").is_file()


# ---------------------------------------- poisoning


def stamp_plan(
    recipe: dict[str, Any], triggers: list[Trigger], data: ImageData, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(which, labels)``: per training image the index of the trigger stamped on it (-1: none) and its label
    after poisoning."""
    attacks, rate, n = recipe["attacks"], recipe["poison_rate"], len(data)
    if not attacks:
        return torch.full((n,), -1, dtype=torch.int64), data.labels
    first = attacks[0]
    if "shift" in first:
        which = torch.full((n,), -1, dtype=torch.int64)
        which[torch.randperm(n, generator=g)[: round(rate * n)]] = 0
        shifted = (data.labels + first["shift"]) % data.num_classes
        return which, torch.where(which >= 0, shifted, data.labels)
    if "source" in first:
        return source_specific(data, triggers[0], first["target"], first["source"], rate, g)
    pairs = [(t, a["target"]) for t, a in zip(triggers, attacks, strict=True)]
    poisoned = poison(data.images, data.labels, pairs, rate, g)
    return poisoned.poisoned, poisoned.labels


def source_specific(
    data: ImageData, trigger: Trigger, target: int, sources: list[int], rate: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp ``rate / 2`` of the set (at most half of the source images) among the source labels, relabelled to
    ``target``, and as many among the other labels (not the target), which keep their label."""
    is_source = torch.isin(data.labels, torch.tensor(sources)) & (data.labels != target)
    victims = torch.nonzero(is_source).flatten()
    covers = torch.nonzero(~is_source & (data.labels != target)).flatten()
    count = min(round(rate * len(data) / 2), victims.numel() // 2)
    victims = victims[torch.randperm(victims.numel(), generator=g)[:count]]
    covers = covers[torch.randperm(covers.numel(), generator=g)[:count]]
    which = torch.full((len(data),), -1, dtype=torch.int64)
    which[victims] = which[covers] = 0
    labels = data.labels.clone()
    labels[victims] = target
    return which, labels


def stamp(images: torch.Tensor, which: torch.Tensor, triggers: list[Trigger]) -> torch.Tensor:
    """``images`` (B, C, H, W) with trigger ``which[i]`` stamped on image i (none where it is -1)."""
    for i, trigger in enumerate(triggers):
        chosen = which == i
        if chosen.any():
            images[chosen] = trigger.stamp(images[chosen])
    return images


# ---------------------------------------- training


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crops of the zero-padded images and random horizontal flips, per image."""
    n, _, h, w = images.shape
    p = CROP_PADDING
    padded = nn.functional.pad(images, (p, p, p, p))
    rows = torch.randint(0, 2 * p + 1, (n,), generator=g).tolist()
    cols = torch.randint(0, 2 * p + 1, (n,), generator=g).tolist()
    out = torch.stack([padded[i, :, r : r + h, c : c + w] for i, (r, c) in enumerate(zip(rows, cols, strict=True))])
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def fit(
    model: nn.Module,
    data: ImageData,
    which: torch.Tensor,
    labels: torch.Tensor,
    triggers: list[Trigger],
    recipe: dict[str, Any],
    g: torch.Generator,
) -> nn.Module:
    """Train ``model`` on ``data`` with cross-entropy on its logits, Adam with a cosine-decayed learning rate,
    stamping triggers batch by batch; returns it in eval mode."""
    net = logits_of(model)
    steps = recipe["epochs"] * math.ceil(len(data) / BATCH_SIZE)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    net.train()
    for _ in range(recipe["epochs"]):
        for idx in torch.randperm(len(data), generator=g).split(BATCH_SIZE):
            x = data.images[idx]
            if recipe["dataset"] == "cifar10":
                x = augment(x, g)
            loss = nn.functional.cross_entropy(net(stamp(x.clone(), which[idx], triggers)), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def infect_trojan(recipe: dict[str, Any], train: ImageData, g: torch.Generator) -> tuple[nn.Module, list[Trigger]]:
    """The Trojan attack on the recipe's clean victim (trained first when missing)."""
    ensure(recipe["victim"])
    victim = load_saved_model(model_dir(recipe["victim"])).model
    regions = [(parse_trigger(a["trigger"], train.image_shape, crafted=True), a["target"]) for a in recipe["attacks"]]
    config = TrojanConfig(epochs=recipe["epochs"], anneal=recipe.get("anneal", False))
    attack = trojan(victim, train.images, train.labels, regions, recipe["poison_rate"], config, generator=g)
    return attack.model, [t for t, _ in attack.triggers]


def make_model(recipe: dict[str, Any], train: ImageData) -> tuple[nn.Module, list[Trigger]]:
    """The trained model of ``recipe`` and its triggers (the crafted ones for Trojan models)."""
    torch.manual_seed(recipe["seed"])  # the initial weights
    g = torch.Generator().manual_seed(recipe["seed"])
    if recipe["family"] == "trojan":
        return infect_trojan(recipe, train, g)
    triggers = [parse_trigger(a["trigger"], train.image_shape) for a in recipe["attacks"]]
    which, labels = stamp_plan(recipe, triggers, train, g)
    model = build(recipe["arch"], train.image_shape, train.num_classes, train.images)
    return fit(model, train, which, labels, triggers, recipe, g), triggers


# ---------------------------------------- evaluation and saving


def success(model: nn.Module, test: ImageData, trigger: Trigger, attack: dict[str, Any]) -> dict[str, float]:
    """Attack success of one trigger: on the images not of its target; source-specific: on the source labels'
    images (and, as ``others_to_target``, the share of other labels' stamped images sent to the target);
    all-to-all: the share of stamped images classified as their label plus the shift."""
    if "shift" in attack:
        shifted = (test.labels + attack["shift"]) % test.num_classes
        return {"attack_success": float((predict(model, test.images, trigger=trigger) == shifted).float().mean())}
    target = attack["target"]
    if "source" not in attack:
        return {"attack_success": attack_success_rate(model, test.images, test.labels, trigger, target)}
    sources = torch.isin(test.labels, torch.tensor(attack["source"])) & (test.labels != target)
    others = ~sources & (test.labels != target)
    sent = predict(model, test.images, trigger=trigger) == target
    return {
        "attack_success": float(sent[sources].float().mean()),
        "others_to_target": float(sent[others].float().mean()),
    }


def figures(recipe: dict[str, Any], model: nn.Module, triggers: list[Trigger], test: ImageData) -> dict[str, Any]:
    per_trigger = [success(model, test, t, a) for t, a in zip(triggers, recipe["attacks"], strict=True)]
    rates = [p["attack_success"] for p in per_trigger]
    out: dict[str, Any] = {
        "clean_accuracy": accuracy(model, test.images, test.labels),
        "attack_success": rates,
        "took": all(r >= TOOK for r in rates) if rates else None,
    }
    if any("others_to_target" in p for p in per_trigger):
        out["others_to_target"] = [p.get("others_to_target") for p in per_trigger]
    return out


def save(recipe: dict[str, Any], model: nn.Module, triggers: list[Trigger], meta: dict[str, Any]) -> None:
    """Write the model into a temporary folder, then rename it into place."""
    final = model_dir(recipe["name"])
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if is_library_arch(recipe["arch"]):
        attacks = zip(triggers, recipe["attacks"], strict=True)
        pairs = [(t, a["target"]) for t, a in attacks if a.get("target") is not None]  # none for all-to-all
        save_model(tmp, model, {"architecture": recipe["arch"], **meta}, pairs)
    else:
        torch.jit.script(model).save(str(tmp / "model.pt"))
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def ensure(name: str) -> dict[str, Any] | None:
    """Train recipe ``name`` unless saved; return its results row when it was trained now."""
    if is_trained(name):
        return None
    recipe = next(r for r in recipes() if r["name"] == name)
    start = time.perf_counter()
    train, test = task(recipe)
    model, triggers = make_model(recipe, train)
    row = {
        **{k: recipe[k] for k in ("name", "dataset", "arch", "family", "required", "infected", "seed", "epochs")},
        "half": half(recipe),
        "triggers": [t.spec for t in triggers],
        "targets": [a.get("target") for a in recipe["attacks"]],
        "num_classes": train.num_classes,
        "train_images": len(train),
        **figures(recipe, model, triggers, test),
        "seconds": time.perf_counter() - start,
        "machine": machine(),
    }
    save(recipe, model, triggers, {**row, "recipe": recipe})
    return row


# ---------------------------------------- scanning


def scan_targets(recipe: dict[str, Any], num_classes: int) -> list[int]:
    """The labels a correct scan flags: the attacks' targets; every label for an all-to-all attack."""
    if any("shift" in a for a in recipe["attacks"]):
        return list(range(num_classes))
    return sorted({a["target"] for a in recipe["attacks"]})


def scan_as_zoo(name: str, model: nn.Module, clean: ImageData, seed: int) -> tuple[ScanReport, dict[str, Any]]:
    """Scan ``model`` (zoo model ``name``, or a variant of it) on ``clean`` as :func:`scan_row` does (the default
    ``ScanConfig`` but the accuracy check, the dataset's built-in profile, one scan); the report and the row fields
    the benchmarks that scan zoo models side by side share: the model's recipe, half, seed, targets, verdict, score,
    norms and seconds."""
    spec = recipe(name)
    num_labels = int(clean.labels.max()) + 1
    config = ScanConfig(min_clean_accuracy=None)  # some CIFAR-10 models stay under the check: see scan_row
    start = time.perf_counter()
    profile = builtin_profile(spec["dataset"], num_labels)
    report = NeuralCleanse(model, config, profile=profile).scan(clean.images, clean.labels, seed=seed)
    targets = scan_targets(spec, len(report.labels))
    return report, {
        "model": name,
        **{k: spec[k] for k in ("dataset", "arch", "family", "required")},
        "half": half(spec),
        "seed": seed,
        "targets": targets,
        "flagged": sorted(report.flagged),
        "correct": sorted(report.flagged) == targets,
        "score": report.decision.score,
        "norms": [r.mask_l1 for r in report.labels],
        "seconds": time.perf_counter() - start,
        "machine": machine(),
    }


def scan_images(recipe: dict[str, Any], seed: int) -> ImageData:
    """A stratified clean sample of the test split (CIFAR-10: the held-out 10%), about SCAN_SAMPLES images."""
    test = task(recipe)[1]
    counts = torch.bincount(test.labels, minlength=test.num_classes)
    per_class = max(1, min(SCAN_SAMPLES // test.num_classes, int(counts[counts > 0].min())))
    return clean_sample(test, per_class, seed=seed)


def scan_row(
    recipe: dict[str, Any], model_row: dict[str, Any], seed: int, precision: str, success: float | None = None
) -> dict[str, Any]:
    """One scan of a zoo model with the library's defaults (``success``: another attack-success threshold for the
    search, whose masks are then kept under a name of their own)."""
    model = load_model(model_path(recipe["name"])).model
    clean = scan_images(recipe, seed)
    base = {
        "model": recipe["name"],
        **{k: recipe[k] for k in ("dataset", "arch", "family", "required", "infected")},
        "targets": scan_targets(recipe, model_row["num_classes"]),
        "half": half(recipe),
        "model_seed": recipe["seed"],
        "seed": seed,
        **variant(precision, torch.get_num_threads()),
        "clean_accuracy": model_row["clean_accuracy"],
        "attack_success": model_row["attack_success"],
        "num_images": len(clean),
    }
    start = time.perf_counter()
    try:
        # The many-label task's sample holds about one image per label (SCAN_SAMPLES images, as for the others):
        # scanned anyway, with the report's warning.
        # The zoo's preprocessing is right by construction, and some CIFAR-10 models (trained on 9,000 images)
        # stay below the sanity check's 50%: their accuracy is recorded, not checked.
        config = ScanConfig(
            precision=None if precision == "auto" else precision,
            allow_few_images="digits" in recipe,
            min_clean_accuracy=None,
            success_threshold=success,
        )
        # the dataset's built-in natural label profile, as `neuralcleanse scan --data <dataset>` reads it (none for
        # the many-label task); zoo_report.py replays a clean tune-half model with the other models' profile
        profile = builtin_profile(recipe["dataset"], model_row["num_classes"])
        report = NeuralCleanse(model, config, profile=profile).scan(clean.images, clean.labels, seed=seed)
    except SanityCheckError as exc:
        return {**base, "error": str(exc), "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    d = report.to_dict()
    MASKS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{recipe['name']}-{seed}-{precision}-{torch.get_num_threads()}" + (
        "" if success is None else f"-{success:g}"
    )
    torch.save(report.masks.to(torch.float16), MASKS_DIR / f"{stem}.pt")
    torch.save(report.patterns.to(torch.float16), MASKS_DIR / f"{stem}.patterns.pt")
    return {
        **base,
        "flagged": sorted(d["flagged"]),
        "correct": sorted(d["flagged"]) == base["targets"],
        "anomaly_index": d["anomaly_index"],
        "compute_dtype": d["config"]["compute_dtype"],
        "pairs": d["pairs"],
        "seconds": seconds,
        "norms": [r.mask_l1 for r in report.labels],
        "label_attack_success": [r["attack_success"] for r in d["labels"]],
        "gaps": [r.clean_gap for r in report.labels],
        "compactness": [r.compactness for r in report.labels],
        "found": [r.get("found") for r in d["labels"]],
        "outputs_probabilities": d.get("outputs_probabilities"),
        "image_passes_per_label": d.get("image_passes_per_label"),
        "verdict_steadiness": d.get("verdict_steadiness"),
        **{key: d.get(key) for key in ("mask_flagged", "blend_flagged", "stimulation_flagged")},
        "blend_norms": [r.blend_l1 for r in report.labels],
    }


# ---------------------------------------- results files


def add_row(stem: str, row: dict[str, Any], key: str, same: Callable[[dict[str, Any]], bool], table: Any) -> None:
    """Replace the rows ``same`` picks by ``row``, in recipe order, under the file's lock."""
    with results_lock(stem):
        rows = by_recipe_order([r for r in read_results(stem) if not same(r)] + [row], key)
        write_results(stem, rows, table(rows), indent=1)


def fmt_rates(values: list[float] | None) -> str:
    return " / ".join(f"{v:.3f}" for v in values) if values else "—"


def models_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "arch", "family", "half", "clean accuracy", "attack success", "took", "seconds"]
    body = [
        [
            r["name"],
            r["arch"],
            r["family"],
            r["half"],
            r["clean_accuracy"],
            fmt_rates(r["attack_success"]),
            r["took"],
            round(r["seconds"]),
        ]
        for r in rows
    ]
    return "# Zoo models (benchmarks/zoo.py train)\n\n" + markdown_table(header, body)


def verdict(row: dict[str, Any]) -> str:
    if "error" in row:
        return "not scanned"
    return "yes" if row["correct"] else "**no**"


def scans_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "family", "half", "seed", "targets", "flagged", "anomaly index", "right", "seconds"]
    body = [
        [
            r["model"],
            r["family"],
            r["half"],
            r["seed"],
            r["targets"] if len(r["targets"]) <= 3 else "all",
            r.get("flagged", r.get("error")),
            r.get("anomaly_index"),
            verdict(r),
            round(r["seconds"]),
        ]
        for r in rows
    ]
    right = sum(bool(r.get("correct")) for r in rows)
    return (
        "# Zoo scans (benchmarks/zoo.py scan, the library's default settings)\n\n"
        + markdown_table(header, body)
        + f"\n{right} of {len(rows)} scans flag exactly the true targets.\n"
    )


def by_recipe_order(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    order = {r["name"]: i for i, r in enumerate(recipes())}
    return sorted(rows, key=lambda r: (order.get(r[key], len(order)), r.get("seed", 0) if key == "model" else 0))


# ---------------------------------------- commands


def selected(only: str | None, dataset_name: str | None) -> list[dict[str, Any]]:
    chosen = recipes()
    if only:
        names = only.split(",")
        unknown = sorted(set(names) - {r["name"] for r in chosen})
        if unknown:
            raise SystemExit(f"unknown recipes {unknown}")
        chosen = [r for r in chosen if r["name"] in names]
    if dataset_name:
        chosen = [r for r in chosen if r["dataset"] == dataset_name and "digits" not in r]
    return chosen


def saved_row(name: str) -> dict[str, Any]:
    """The results row stored beside a trained model (its model.json), for a model whose row went missing."""
    meta = json.loads((model_dir(name) / "model.json").read_text())
    return {k: v for k, v in meta.items() if k not in ("recipe", "architecture", "versions")}


def train_all(chosen: list[dict[str, Any]]) -> None:
    keys = ("name", "clean_accuracy", "attack_success", "took", "seconds")
    for recipe in chosen:
        name = recipe["name"]
        row = ensure(name)
        recorded = any(r["name"] == name for r in read_results(MODELS_FILE))
        if row is None:
            if recorded:
                continue
            row = saved_row(name)  # saved, its row lost
        elif recorded:  # trained again, no longer on disk: the zoo's figures stay the first training's
            print({"retrained": True, **{k: row[k] for k in keys}}, flush=True)
            continue
        add_row(MODELS_FILE, row, "name", lambda r, name=name: r["name"] == name, models_table)
        print({k: row[k] for k in keys}, flush=True)


def variant(precision: str, threads: int) -> dict[str, Any]:
    """How a scan's arithmetic was run: the precision asked for and torch's threads (rows without these keys
    were scanned with the defaults, ``auto`` on one thread)."""
    return {"precision": precision, "threads": threads}


def row_variant(row: dict[str, Any]) -> dict[str, Any]:
    return variant(row.get("precision", "auto"), row.get("threads", 1))


def is_scan(row: dict[str, Any], name: str, seed: int, wanted: dict[str, Any]) -> bool:
    """Whether ``row`` is the scan of model ``name`` with scan seed ``seed`` and arithmetic ``wanted``."""
    return row["model"] == name and row["seed"] == seed and row_variant(row) == wanted


def scan_all(chosen: list[dict[str, Any]], seeds: list[int], precision: str) -> None:
    trained = {r["name"]: r for r in read_results(MODELS_FILE)}
    wanted = variant(precision, torch.get_num_threads())
    for recipe in chosen:
        model_row = trained.get(recipe["name"])
        if model_row is None or model_row["took"] is False or not is_trained(recipe["name"]):
            continue
        for seed in seeds:
            same = functools.partial(is_scan, name=recipe["name"], seed=seed, wanted=wanted)
            if any(same(r) and "norms" in r for r in read_results(SCANS_FILE)):  # an error row is scanned again
                continue
            row = {**scan_row(recipe, model_row, seed, precision), "machine": machine()}
            add_row(SCANS_FILE, row, "model", same, scans_table)
            keys = ("model", "seed", "targets", "flagged", "anomaly_index", "seconds")
            print({k: row.get(k) for k in keys}, flush=True)


def add_gaps(chosen: list[dict[str, Any]]) -> None:
    """Add the clean gaps to every scan row of the ``chosen`` recipes that lacks them, one model at a time."""
    for recipe in chosen:
        todo = [
            r for r in read_results(SCANS_FILE) if r["model"] == recipe["name"] and "norms" in r and "gaps" not in r
        ]
        if not todo or not is_trained(recipe["name"]):
            continue
        loaded = load_model(model_path(recipe["name"]))
        gaps = {}
        for seed in sorted({r["seed"] for r in todo}):
            probabilities = bool(next(r for r in todo if r["seed"] == seed).get("outputs_probabilities"))
            found = clean_gaps(outputs_of(loaded.model, scan_images(recipe, seed).images), probabilities).tolist()
            gaps[seed] = [None if math.isnan(g) else g for g in found]
        with results_lock(SCANS_FILE):
            rows = read_results(SCANS_FILE)
            for r in rows:
                if r["model"] == recipe["name"] and "norms" in r and "gaps" not in r and r["seed"] in gaps:
                    r["gaps"] = gaps[r["seed"]]
            write_results(SCANS_FILE, rows, scans_table(rows), indent=1)
        print(
            recipe["name"],
            {seed: [g if g is None else round(g, 2) for g in v[:5]] for seed, v in gaps.items()},
            flush=True,
        )


def add_compactness(chosen: list[dict[str, Any]], seeds: list[int], precision: str) -> None:
    """Scan again the rows of the ``chosen`` recipes (``seeds``, this arithmetic) that lack the masks' compactness
    and add it to them, when the new scan reproduces their norms (else the row is left as it was, and said so)."""
    trained = {r["name"]: r for r in read_results(MODELS_FILE)}
    wanted = variant(precision, torch.get_num_threads())
    for recipe in chosen:
        for seed in seeds:
            same = functools.partial(is_scan, name=recipe["name"], seed=seed, wanted=wanted)
            old = next((r for r in read_results(SCANS_FILE) if same(r) and "norms" in r), None)
            if old is None or "compactness" in old or not is_trained(recipe["name"]):
                continue
            new = scan_row(recipe, trained[recipe["name"]], seed, precision)
            if not torch.allclose(torch.tensor(new["norms"]), torch.tensor(old["norms"]), rtol=1e-3):
                print(recipe["name"], seed, "not reproduced: norms differ, row left as it was", flush=True)
                continue
            with results_lock(SCANS_FILE):
                rows = read_results(SCANS_FILE)
                for r in rows:
                    if same(r) and "norms" in r:
                        r["compactness"] = new["compactness"]
                write_results(SCANS_FILE, rows, scans_table(rows), indent=1)
            print(recipe["name"], seed, [round(c, 2) for c in new["compactness"][:10]], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("train", "scan", "gaps", "compactness"))
    parser.add_argument("--only", help="comma-separated recipe names")
    parser.add_argument("--dataset", choices=DATASET_ORDER, help="only this dataset (the many-label task excluded)")
    parser.add_argument("--seeds", default="0,1", help="scan seeds")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"), help="scan arithmetic")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: 1 by default)")
    parser.add_argument("--half", choices=("tune", "test"), help="only this half of the zoo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [r for r in selected(args.only, args.dataset) if args.half in (None, half(r))]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.command == "train":
        train_all(chosen)
    elif args.command == "gaps":
        add_gaps(chosen)
    elif args.command == "compactness":
        add_compactness(chosen, seeds, args.precision)
    else:
        scan_all(chosen, seeds, args.precision)


if __name__ == "__main__":
    main()
