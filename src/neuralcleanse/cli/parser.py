"""The argument parser: every verb, its flags and their help."""

from __future__ import annotations

import argparse

from .._version import __version__


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


#: The ``scan`` flags ``scan-zoo`` takes too, with the same help.
_ZOO_SCAN_FLAGS = (
    "arch", "value_range", "mean", "std", "channel_order", "layout", "device", "mode", "samples",
    "seed", "success_threshold", "searches", "precision", "anomaly_threshold", "skip_sanity_check",
)  # fmt: skip


def _add_engine_args(p: argparse.ArgumentParser, workers_help: str, address_verb: str) -> None:
    p.add_argument("--workers", type=int, metavar="N", help=workers_help)
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help=f"{address_verb} an existing Ray cluster: auto or HOST:PORT (needs neuralcleanse[ray])",
    )


def _add_scan_zoo(
    sub: argparse._SubParsersAction, common: argparse.ArgumentParser, scan: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "scan-zoo",
        parents=[common],
        help="scan every model of a directory or manifest, in parallel on Ray; one report per model and a summary",
    )
    p.add_argument(
        "zoo",
        metavar="ZOO",
        help="a directory of models (files and `neuralcleanse train` folders) or a manifest: a text file of model "
        "paths, or a CSV with a model column and optional name, data, arch, preprocessing, infected and targets "
        "columns (docs/cli.md)",
    )
    p.add_argument("--data", help="clean labelled images for models whose manifest line names none (as scan's --data)")
    p.add_argument("--out", required=True, help="directory for one report folder per model, zoo.json and zoo.html")
    _add_engine_args(
        p,
        "models scanned at once on a local Ray (default: all cores); 1 without --ray-address scans in this "
        "process, without Ray",
        "scan on",
    )
    p.add_argument(
        "--timeout-per-model", type=float, metavar="S", help="stop a model's scan after S seconds and mark it so"
    )
    for action in scan._actions:  # the same Action objects, as argparse's parents= shares them
        if action.dest in _ZOO_SCAN_FLAGS:
            p._add_action(action)
    p.set_defaults(verb="scan-zoo")


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
    p.set_defaults(verb="train")

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
    p.set_defaults(verb="evaluate")

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
        help="attack success every reversed trigger must keep (default: 0.99, the original code's "
        "ATTACK_SUCC_THRESHOLD)",
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
        help="the model's arithmetic during the search; auto: bfloat16 on CPUs that compute it natively, else float32 "
        "(default: auto in fast mode, float32 in reference mode)",
    )
    p.add_argument(
        "--anomaly-threshold",
        type=float,
        metavar="INDEX",
        help="flag labels below the median whose anomaly index exceeds this (default: 2, the paper's; with "
        "hundreds of labels clean ones can pass 2, see docs/how-it-works.md)",
    )
    p.add_argument(
        "--skip-sanity-check", action="store_true", help="scan even when the model misclassifies most clean images"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    _add_engine_args(
        p,
        "split the labels into N shards searched in parallel on a local Ray (same report as one "
        "process; needs neuralcleanse[ray]; default 1: no sharding)",
        "search the label shards on",
    )
    p.set_defaults(verb="scan")
    _add_scan_zoo(sub, common, p)

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
    p.set_defaults(verb="mitigate")

    p = sub.add_parser(
        "demo", parents=[common], help="train (or reuse) a BadNets and a clean MNIST model and scan both"
    )
    p.add_argument("--out", default="runs/demo", help="where the reports go (default runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(verb="demo")
    return parser
