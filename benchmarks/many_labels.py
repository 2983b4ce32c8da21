"""Scan cost as the number of labels grows: BadNets and clean models with 10, 100 and 1000 labels.

None of the datasets here has hundreds of labels, so this builds a task that has: an image of d MNIST digits
side by side (28 x 28d pixels) is labelled with the number they spell, 10^d labels. The network is the paper's
MNIST network widened to the image (``numbers_net``); the BadNets model is poisoned at the paper's 10% with the
4x4 white square in the bottom-right corner (over the last digit). Each model is scanned in fast mode with the
same 1000 clean test images, so the figures show how the cost per label behaves as K grows from 10 to 1000.

    python benchmarks/many_labels.py [--digits 1,2,3] [--models badnets,clean] [--seed 0] [--collect]

Writes benchmarks/results/many_labels.{json,md}; the models go to runs/models/numbers-<d>-<badnets|clean>
(trained once, reused).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import MODELS_DIR, TRIGGER, machine, markdown_table, read_results, write_results
from torch import nn

from neuralcleanse.attacks import poison
from neuralcleanse.config import ScanConfig
from neuralcleanse.data import load_dataset
from neuralcleanse.metrics import accuracy, attack_success_rate, true_trigger_overlap
from neuralcleanse.models import Normalize, PaperNet
from neuralcleanse.scan import NeuralCleanse
from neuralcleanse.train import TrainConfig, train_classifier
from neuralcleanse.triggers import Trigger, parse_trigger

TARGETS = {1: 7, 2: 42, 3: 421}  # any label works
POISON_RATE = 0.1  # the paper's BadNets rate (Section VI-A)
TRAIN_IMAGES = 60_000  # composed training images per digit of the number
EPOCHS = 4
SAMPLES = 1000  # clean images for the scan, as the original code's NB_SAMPLE


def numbers_net(digits: int) -> PaperNet:
    """The paper's MNIST network (see ``neuralcleanse.models.mnist_net``) for 28 x 28d images, 10^d labels."""
    width = ((28 * digits - 4) // 2 - 4) // 2  # after two valid 5x5 convolutions and two 2x2 poolings
    features = nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * width, 512),
        nn.ReLU(),
    )
    return PaperNet(Normalize([0.1307], [0.3081]), features, nn.Linear(512, 10**digits))


def numbers(split: str, digits: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images of ``digits`` random MNIST digits of ``split`` side by side, labelled by their number."""
    mnist = load_dataset("mnist", split=split)
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(mnist), (count, digits), generator=g)
    images = torch.cat([mnist.images[picks[:, i]] for i in range(digits)], dim=3)  # (count, 1, 28, 28d)
    labels = torch.zeros(count, dtype=torch.int64)
    for i in range(digits):
        labels = labels * 10 + mnist.labels[picks[:, i]]
    return images, labels


def model_path(digits: int, infected: bool) -> Path:
    return MODELS_DIR / f"numbers-{digits}-{'badnets' if infected else 'clean'}"


def ensure_numbers_model(digits: int, infected: bool) -> tuple[nn.Module, Trigger, dict[str, Any]]:
    """Train the model (or load it from an earlier run); return it, the trigger and its figures."""
    out = model_path(digits, infected)
    trigger = parse_trigger(TRIGGER, (1, 28, 28 * digits))
    model = numbers_net(digits)
    if (out / "model.pt").exists():
        model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
        return model.eval(), trigger, json.loads((out / "model.json").read_text())
    torch.manual_seed(0)
    model = numbers_net(digits)
    images, labels = numbers("train", digits, TRAIN_IMAGES * digits, seed=0)
    if infected:
        poisoned = poison(images, labels, [(trigger, TARGETS[digits])], POISON_RATE, torch.Generator().manual_seed(0))
        images, labels = poisoned.images, poisoned.labels
    start = time.perf_counter()
    train_classifier(model, images, labels, TrainConfig(epochs=EPOCHS), torch.Generator().manual_seed(0))
    test_images, test_labels = numbers("test", digits, 10_000, seed=1)
    figures = {
        "train_seconds": time.perf_counter() - start,
        "train_images": len(images),
        "epochs": EPOCHS,
        "clean_accuracy": accuracy(model, test_images, test_labels),
        "attack_success": attack_success_rate(model, test_images, test_labels, trigger, TARGETS[digits])
        if infected
        else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "model.json").write_text(json.dumps(figures, indent=2) + "\n")
    return model.eval(), trigger, figures


def scan_row(digits: int, infected: bool, seed: int) -> dict[str, Any]:
    model, trigger, figures = ensure_numbers_model(digits, infected)
    images, labels = numbers("test", digits, SAMPLES, seed=2)
    target = TARGETS[digits]
    cpu_start = time.process_time()
    # 1000 images over up to 1000 labels, as the original code samples whatever the label count: below the scan's
    # MIN_IMAGES_PER_LABEL with 100 or 1000 labels, which the results keep (their reports carry the warning).
    report = NeuralCleanse(model, ScanConfig(allow_few_images=True)).scan(images, labels, seed=seed)
    cpu_seconds = time.process_time() - cpu_start
    num_labels = 10**digits
    norms = sorted((r.mask_l1, r.label) for r in report.labels)
    return {
        "digits": digits,
        "num_labels": num_labels,
        "infected": infected,
        "mode": "fast",
        "seed": seed,
        "num_images": SAMPLES,
        **{k: figures[k] for k in ("clean_accuracy", "attack_success", "train_seconds")},
        "seconds": report.seconds,
        "cpu_seconds": cpu_seconds,
        "seconds_per_label": report.seconds / num_labels,
        "image_passes_per_label": statistics.mean(r.image_passes for r in report.labels),
        "anomaly_index": report.anomaly_index,
        "flagged": report.flagged,
        "median_l1": report.median_l1,
        "smallest_l1": [{"label": label, "mask_l1": norm} for norm, label in norms[:3]],
        "target": target if infected else None,
        "target_l1": report.labels[target].mask_l1 if infected else None,
        "target_iou": true_trigger_overlap(report.masks[target], trigger.mask) if infected else None,
        "correct": report.flagged == ([target] if infected else []),
    }


def render(rows: list[dict[str, Any]]) -> str:
    table = markdown_table(
        [
            "labels",
            "image",
            "seed",
            "model",
            "clean accuracy",
            "attack success",
            "scan seconds",
            "seconds per label",
            "image passes per label",
            "anomaly index",
            "flagged",
            "target norm / median",
            "target IoU",
        ],
        [
            [
                r["num_labels"],
                f"28x{28 * r['digits']}",
                r["seed"],
                "BadNets" if r["infected"] else "clean",
                r["clean_accuracy"],
                r["attack_success"],
                r["seconds"],
                r["seconds_per_label"],
                r["image_passes_per_label"],
                r["anomaly_index"],
                r["flagged"] if len(r["flagged"]) <= 5 else f"{len(r['flagged'])} labels",
                f"{r['target_l1']:.1f} / {r['median_l1']:.1f}" if r["infected"] else f"— / {r['median_l1']:.1f}",
                r["target_iou"],
            ]
            for r in rows
        ],
    )
    text = "# Scan cost against the number of labels (MNIST numbers, fast mode)\n\n" + table
    if rows:
        m = rows[0]["machine"]
        text += f"\nMachine: {m['processor']}, {m['torch_threads']} torch threads, CUDA: {m['cuda']}.\n"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", default="1,2,3", help="digits per number: 10^d labels")
    parser.add_argument("--seed", type=int, default=0, help="the scan's seed (the models are trained with seed 0)")
    parser.add_argument("--models", default="badnets,clean", help="badnets, clean or both")
    parser.add_argument("--output", default="many_labels", help="results file stem under benchmarks/results")
    parser.add_argument("--collect", action="store_true", help="only rewrite the table from the saved results")
    args = parser.parse_args()
    if args.collect:
        write_results(args.output, read_results(args.output), render(read_results(args.output)))
        return
    wanted = [int(d) for d in args.digits.split(",")]
    known = {"badnets": True, "clean": False}
    unknown = sorted(set(args.models.split(",")) - set(known))
    if unknown:
        parser.error(f"unknown models {unknown}; expected some of {list(known)}")
    kinds = [known[k] for k in args.models.split(",")]
    # Rows of runs not repeated now are kept, so a 1000-label scan (about 25 minutes here) can be added alone.
    rows = [
        r
        for r in read_results(args.output)
        if not (r["digits"] in wanted and r["infected"] in kinds and r["seed"] == args.seed)
    ]
    for digits in wanted:
        for infected in kinds:
            rows.append({**scan_row(digits, infected, args.seed), "machine": machine()})
            print({k: v for k, v in rows[-1].items() if k != "machine"}, flush=True)
            rows.sort(key=lambda r: (r["digits"], not r["infected"], r["seed"]))
            write_results(args.output, rows, render(rows))


if __name__ == "__main__":
    main()
