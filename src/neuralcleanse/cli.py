"""The ``neuralcleanse`` command line: the only module that prints or exits.

Each verb is a thin shell over importable functions. Errors end in one funnel: a one-line message on stderr and
exit status 1 (2 for usage errors, 130 for Ctrl-C); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .progress import ProgressEvent

logger = logging.getLogger("neuralcleanse")


class CLIError(Exception):
    """An error the CLI reports as one line (exit 1)."""


# --- progress bars ------------------------------------------------------------------------------------------


class ProgressBars:
    """Draws one tqdm bar per phase from :class:`ProgressEvent` s, on stderr (hidden when not a terminal
    unless ``force``)."""

    _LABELS = {
        "train": "training",
        "craft": "crafting the trojan trigger",
        "retrain": "retraining the dense layers",
        "reverse": "reversing triggers",
        "restart": "searching again from new starts",
        "check": "sanity check",
        "measure": "measuring the triggers",
        "filter": "input filter",
        "prune": "pruning",
        "unlearn": "unlearning",
        "evaluate": "evaluating",
    }

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        bar = self.bars.get(event.phase)
        if bar is None or bar.total != event.total:
            if bar is not None:
                bar.close()
            bar = tqdm(
                total=event.total,
                desc=self._LABELS.get(event.phase, event.phase),
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0.5,
                disable=None,
            )
            self.bars[event.phase] = bar
        bar.n = event.done
        if event.info:
            bar.set_postfix(
                {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in event.info.items()}, refresh=False
            )
        bar.refresh()
        if event.done >= event.total:
            bar.close()
            del self.bars[event.phase]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


# --- shared helpers -----------------------------------------------------------------------------------------


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device {name!r} is not a device name; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_model(args: argparse.Namespace, device: torch.device) -> Any:
    from .loading import load_model

    return load_model(
        args.model,
        arch=getattr(args, "arch", None),
        preprocessing=_preprocessing(args),
        unsafe_pickle=getattr(args, "unsafe_pickle", False),
        map_location=device,
    )


def _preprocessing(args: argparse.Namespace) -> Any:
    """The --value-range/--mean/--std/--channel-order/--layout flags as a Preprocessing, or None if none given."""
    from .preprocess import Preprocessing, parse_value_range

    flags = ("value_range", "mean", "std", "channel_order", "layout")
    if all(getattr(args, f, None) is None for f in flags):
        return None
    given: dict[str, Any] = {f: getattr(args, f) for f in flags if getattr(args, f) is not None}
    if "value_range" in given:
        given["value_range"] = parse_value_range(given["value_range"])
    for key in ("mean", "std"):
        if key in given:
            given[key] = tuple(given[key])
    return Preprocessing(**given)


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


# --- verbs ----------------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .workflows import train_model

    _seed_everything(args.seed)
    bars = ProgressBars(args.quiet)
    try:
        result = train_model(
            dataset=args.dataset,
            arch=args.arch,
            out=Path(args.out),
            trigger_specs=args.trigger or [],
            targets=args.target or [],
            poison_rate=args.poison_rate,
            epochs=args.epochs,
            seed=args.seed,
            device=_device(args.device),
            progress=bars,
            overwrite=args.overwrite,
            victim=None if args.victim is None else Path(args.victim),
        )
    finally:
        bars.close()
    print(f"saved {result['out']}")
    rows = [
        ("dataset", result["dataset"]),
        ("architecture", result["architecture"]),
        ("clean accuracy", f"{result['clean_accuracy']:.2%}"),
    ]
    for entry in result["triggers"]:
        rows.append((f"attack success -> {entry['target']}", f"{entry['attack_success']:.2%}"))
    rows.append(("seconds", f"{result['seconds']:.1f}"))
    _print_table(rows)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .workflows import evaluate_model

    device = _device(args.device)
    loaded = _load_model(args, device)
    result = evaluate_model(
        loaded, args.data, split=args.split, trigger_specs=args.trigger or [], targets=args.target or []
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [
        ("model", str(args.model)),
        ("data", f"{result['data']} ({result['num_images']} images)"),
        ("clean accuracy", f"{result['clean_accuracy']:.2%}"),
    ]
    for entry in result["triggers"]:
        rows.append((f"attack success {entry['spec']} -> {entry['target']}", f"{entry['attack_success']:.2%}"))
    _print_table(rows)
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from .workflows import scan_model

    config = _scan_config(args)
    _seed_everything(args.seed)
    device = _device(args.device)
    loaded = _load_model(args, device)
    bars = ProgressBars(args.quiet)
    try:
        report, out = scan_model(
            loaded, str(args.model), args.data, Path(args.out), config, args.seed, args.overwrite, bars
        )
    finally:
        bars.close()
    _print_verdict(report.to_dict(), out)
    return 0


def _scan_config(args: argparse.Namespace) -> Any:
    """The scan flags as a ScanConfig. Its messages start with the field's name, the flag's name with dashes."""
    from .config import ANOMALY_THRESHOLD, MIN_CLEAN_ACCURACY, ScanConfig

    try:
        return ScanConfig(
            mode=args.mode,
            searches=args.searches,
            samples=args.samples,
            success_threshold=args.success_threshold,
            precision=args.precision,
            anomaly_threshold=ANOMALY_THRESHOLD if args.anomaly_threshold is None else args.anomaly_threshold,
            min_clean_accuracy=None if args.skip_sanity_check else MIN_CLEAN_ACCURACY,
        )
    except ValueError as exc:
        field, _, rest = str(exc).partition(" ")
        raise CLIError(f"--{field.replace('_', '-')} {rest}") from None


def _print_verdict(report: dict[str, Any], out: Path) -> None:
    verdict = "INFECTED" if report["infected"] else "clean"
    print(
        f"{verdict}: anomaly index {report['anomaly_index']:.2f} "
        f"(threshold {report['anomaly_threshold']:g}), flagged labels {report['flagged'] or 'none'}"
    )
    rows = sorted(report["labels"], key=lambda r: r["mask_l1"])[:5]
    print("  smallest reversed triggers:")
    print("    label   mask L1   anomaly index   attack success")
    for r in rows:
        mark = " *" if r["label"] in report["flagged"] else ""
        label, l1, index, success = r["label"], r["mask_l1"], r["anomaly_index"], r["attack_success"]
        print(f"    {label:>5}   {l1:7.1f}   {index:13.2f}   {success:14.2%}{mark}")
    print(f"  {report['seconds']:.1f} s, {report['mode']} mode; report: {out / 'report.html'}")


def cmd_mitigate(args: argparse.Namespace) -> int:
    from .workflows import mitigate_model

    _seed_everything(args.seed)
    device = _device(args.device)
    loaded = _load_model(args, device)
    bars = ProgressBars(args.quiet)
    try:
        result = mitigate_model(
            loaded,
            str(args.model),
            Path(args.report),
            args.data,
            args.method,
            Path(args.out),
            trigger_specs=args.trigger or [],
            targets=args.target or [],
            seed=args.seed,
            overwrite=args.overwrite,
            progress=bars,
            fpr=args.fpr,
        )
    finally:
        bars.close()
    rows = [
        ("method", result["method"]),
        ("label", str(result["label"])),
        ("clean accuracy", f"{result['clean_accuracy_before']:.2%} -> {result['clean_accuracy_after']:.2%}"),
        (
            "reversed trigger success",
            f"{result['reversed_attack_success_before']:.2%} -> {result['reversed_attack_success_after']:.2%}",
        ),
    ]
    if result.get("attack_success_before") is not None:
        rows.append(
            ("true trigger success", f"{result['attack_success_before']:.2%} -> {result['attack_success_after']:.2%}")
        )
    if result.get("false_positive_rate") is not None:
        rows.append(("false-positive rate", f"{result['false_positive_rate']:.2%}"))
    if result.get("false_negative_rate") is not None:
        rows.append(("false-negative rate", f"{result['false_negative_rate']:.2%}"))
    rows.append(("written", str(Path(args.out) / "mitigation.json")))
    _print_table(rows)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .workflows import demo

    _seed_everything(args.seed)
    bars = ProgressBars(args.quiet)
    try:
        results = demo(Path(args.out), seed=args.seed, progress=bars, log=print)
    finally:
        bars.close()
    for name, (report, out) in results.items():
        print(f"\n{name}:")
        _print_verdict(report.to_dict(), out)
    return 0


# --- parser -----------------------------------------------------------------------------------------------


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a model directory from `neuralcleanse train`, a TorchScript, "
        "ONNX or Keras (.h5/.keras) file, or a state dict (.pt/.pth/.safetensors) with --arch",
    )
    p.add_argument(
        "--arch", help="architecture for a state dict: a built-in name (mnist, gtsrb) or package.module:callable"
    )
    p.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="allow loading a pickled whole model (executes code from the file: only for files you trust)",
    )
    g = p.add_argument_group("preprocessing the model expects (the scan always works on [0, 1] NCHW images)")
    g.add_argument("--value-range", choices=["0-1", "0-255", "-1-1"], help="pixel range the model expects")
    g.add_argument(
        "--mean", type=float, nargs="+", help="per-channel mean the model subtracts, in the units of --value-range"
    )
    g.add_argument(
        "--std", type=float, nargs="+", help="per-channel std the model divides by, in the units of --value-range"
    )
    g.add_argument("--channel-order", choices=["RGB", "BGR"], help="channel order the model expects")
    g.add_argument("--layout", choices=["NCHW", "NHWC", "NHW"], help="tensor layout the model expects")
    p.add_argument("--device", help="cpu (default), cuda or cuda:N")


def _add_trigger_args(p: argparse.ArgumentParser, help_suffix: str = "") -> None:
    p.add_argument(
        "--trigger",
        action="append",
        metavar="SPEC",
        help="a trigger, e.g. square:size=4,position=bottom-right,color=white; random:size=4; "
        "image:path=FILE; blend:alpha=0.1 (repeatable)" + help_suffix,
    )
    p.add_argument("--target", action="append", type=int, metavar="T", help="target label of the matching --trigger")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralcleanse", description="Find and remove backdoors in image classifiers."
    )
    parser.add_argument("--version", action="version", version=f"neuralcleanse {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", parents=[common], help="train a clean, BadNets or Trojan model")
    p.add_argument("--dataset", required=True, help="mnist, gtsrb, cifar10, an .npz file or an image folder")
    p.add_argument("--arch", required=True, help="architecture: mnist or gtsrb (the paper's networks)")
    _add_trigger_args(
        p,
        "; makes a BadNets model, or with trojan[:size=4,position=bottom-right] a Trojan one (the pattern is "
        "crafted to fire the model's own neurons, then the dense layers are retrained)",
    )
    p.add_argument(
        "--poison-rate", type=float, default=0.1, help="fraction of the training set poisoned per trigger (default 0.1)"
    )
    p.add_argument(
        "--from",
        dest="victim",
        metavar="MODEL_DIR",
        help="Trojan attack on this trained model (saved by train) instead of on one trained first",
    )
    p.add_argument("--epochs", type=int, help="training epochs (default: the architecture's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu (default), cuda or cuda:N")
    p.add_argument("--out", required=True, help="directory to write the model to")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], help="clean accuracy and attack success of a model")
    _add_model_args(p)
    p.add_argument(
        "--data",
        required=True,
        help="mnist, gtsrb, cifar10, a directory of MNIST IDX files, an .npz or an image folder",
    )
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of a named dataset (default test)")
    _add_trigger_args(p, "; default: the triggers recorded in the model's metadata")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "scan", parents=[common], help="detect a backdoor: reverse-engineer triggers, flag outlier labels"
    )
    _add_model_args(p)
    p.add_argument(
        "--data",
        required=True,
        help="clean labelled images: mnist, gtsrb, cifar10, an IDX directory, an .npz or an image folder",
    )
    p.add_argument("--out", required=True, help="directory for report.json, report.html, triggers.npz and images")
    p.add_argument(
        "--mode",
        choices=["fast", "reference"],
        default="fast",
        help="fast: all labels at once (default); reference: the original code, one label at a time",
    )
    p.add_argument(
        "--samples",
        type=int,
        help="clean images used, spread evenly over labels (default: up to 1000, as the original code)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--success-threshold",
        type=float,
        metavar="FRACTION",
        help="attack success every reversed trigger must keep (default: the mode's; see README)",
    )
    p.add_argument(
        "--searches",
        type=int,
        metavar="N",
        help="search every label N times from different random starts, keeping the smallest valid trigger; "
        "about N times the work (default: 2 in fast mode, 1 in reference mode)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        help="the model's arithmetic during the search; auto: bfloat16 on CPUs with AMX or AVX512-BF16, else float32 "
        "(default: auto in fast mode, float32 in reference mode)",
    )
    p.add_argument(
        "--anomaly-threshold",
        type=float,
        metavar="INDEX",
        help="flag labels below the median whose anomaly index exceeds this (default: 2, the paper's; with "
        "hundreds of labels clean ones can pass 2, see README)",
    )
    p.add_argument(
        "--skip-sanity-check", action="store_true", help="scan even when the model misclassifies most clean images"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("mitigate", parents=[common], help="repair an infected model using a scan's reversed trigger")
    _add_model_args(p)
    p.add_argument("--report", required=True, metavar="SCAN_DIR", help="directory written by `neuralcleanse scan`")
    p.add_argument(
        "--data",
        required=True,
        help="clean labelled data (the training split of a named dataset is used for unlearning)",
    )
    p.add_argument("--method", required=True, choices=["filter", "prune", "unlearn"])
    p.add_argument(
        "--fpr",
        type=float,
        default=0.05,
        help="filter: false-positive rate to calibrate to (default 0.05, the paper's)",
    )
    _add_trigger_args(p, "; the true trigger, when known, to measure it too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="directory for the patched model (or filter) and mitigation.json")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_mitigate)

    p = sub.add_parser(
        "demo", parents=[common], help="train (or reuse) a BadNets and a clean MNIST model and scan both"
    )
    p.add_argument("--out", default="runs/demo", help="where the reports go (default runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def _glue_dash_values(argv: Sequence[str]) -> list[str]:
    """``--value-range -1-1`` -> ``--value-range=-1-1``: argparse would read ``-1-1`` as an unknown option."""
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--value-range":
            value = next(rest, None)
            if value is not None and value.startswith("-") and not value.startswith("--"):
                out.append(f"{arg}={value}")
                continue
            out += [arg] if value is None else [arg, value]
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_glue_dash_values(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("neuralcleanse: interrupted; nothing partial was written", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"neuralcleanse: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
