"""The argument parser: every verb, its flags and their help, and the checks of flag values that need no model.

Every flag's help says its default. The defaults are written out here, not imported, so that parsing loads no
torch; ``tests/test_cli_help.py`` compares them with the library's.
"""

from __future__ import annotations

import argparse

from .._version import __version__
from ..archspec import absolute_arch
from .errors import CLIError

#: The one-line description of each verb (``neuralcleanse --help`` lists them, ``neuralcleanse VERB --help``
#: starts with it).
DESCRIPTIONS = {
    "train": "Train a clean, BadNets or Trojan model and save it as a model folder.",
    "evaluate": "Measure a model's clean accuracy and the attack success of its known triggers.",
    "scan": "Detect a backdoor: reverse-engineer the smallest trigger of every label and flag outlier labels.",
    "mitigate": "Repair an infected model with the reversed trigger of a scan (input filter, pruning or unlearning).",
    "demo": "Train (or reuse) a BadNets and a clean MNIST model, scan both and write both reports.",
    "scan-zoo": "Scan every model of a directory or manifest, in parallel on Ray; one report per model and a summary.",
    "profile": "Measure how small each label's trigger is on clean models of a task, from their scans, for --profile.",
}

_DEVICE_HELP = "cpu, cuda or cuda:N (default cpu)"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a model folder from `neuralcleanse train`, a TorchScript, "
        "ONNX or Keras (.h5/.keras) file, or a state dict (.pt/.pth/.safetensors) with --arch",
    )
    p.add_argument(
        "--arch",
        help="architecture of a state dict: a built-in name (mnist, gtsrb), package.module:callable or "
        "path/to/file.py:callable (default: none; other formats carry their architecture)",
    )
    p.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="allow loading a pickled whole model (executes code from the file: only for files you trust; "
        "default off: such files are refused)",
    )
    g = p.add_argument_group("preprocessing the model expects (the scan always works on [0, 1] NCHW images)")
    g.add_argument(
        "--value-range",
        choices=["0-1", "0-255", "-1-1"],
        help="pixel range the model expects (default 0-1)",
    )
    g.add_argument(
        "--mean",
        type=float,
        nargs="+",
        help="per-channel mean the model subtracts, in the units of --value-range (default: none)",
    )
    g.add_argument(
        "--std",
        type=float,
        nargs="+",
        help="per-channel std the model divides by, in the units of --value-range (default: none)",
    )
    g.add_argument("--channel-order", choices=["RGB", "BGR"], help="channel order the model expects (default RGB)")
    g.add_argument(
        "--layout",
        choices=["NCHW", "NHWC", "NHW", "flat"],
        help="tensor layout the model expects; flat: each image one vector in (C, H, W) order, for dense layers "
        "(default: the one the file declares, else NCHW)",
    )
    p.add_argument("--device", help=_DEVICE_HELP)


def _add_trigger_args(p: argparse.ArgumentParser, help_suffix: str) -> None:
    p.add_argument(
        "--trigger",
        action="append",
        metavar="SPEC",
        help="a trigger, e.g. square:size=4,position=bottom-right,color=white; random:size=4; pixels:count=4; "
        "image:path=FILE; blend:alpha=0.1 (repeatable)" + help_suffix,
    )
    p.add_argument(
        "--target",
        action="append",
        type=int,
        metavar="T",
        help="target label of the matching --trigger (repeatable; default: none)",
    )


def _add_out_args(p: argparse.ArgumentParser, what: str, replaced: str) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help=f"folder to write {what} to (created when missing)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {replaced} already in --out (default off: stop without writing anything)",
    )


def _seed(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=int, default=0, help=f"seeds {what}; recorded with the result (default 0)")


#: The ``scan`` flags ``scan-zoo`` takes too, with the same help.
_ZOO_SCAN_FLAGS = (
    "arch", "value_range", "mean", "std", "channel_order", "layout", "device", "mode", "samples",
    "seed", "success_threshold", "searches", "more_searches", "precision", "anomaly_threshold", "decision",
    "score_threshold", "skip_sanity_check", "allow_few_images", "no_blend", "no_stimulation", "no_second_scan",
    "profile",
)  # fmt: skip


def _add_engine_args(p: argparse.ArgumentParser, workers_help: str, address_verb: str) -> None:
    p.add_argument("--workers", type=int, metavar="N", help=workers_help)
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help=f"{address_verb} an existing Ray cluster: auto or HOST:PORT (needs neuralcleanse[ray]; default: none, "
        "a local Ray or none at all)",
    )


def _add_scan_zoo(
    sub: argparse._SubParsersAction, common: argparse.ArgumentParser, scan: argparse.ArgumentParser
) -> None:
    line = DESCRIPTIONS["scan-zoo"]
    p = sub.add_parser("scan-zoo", parents=[common], help=line[0].lower() + line[1:-1], description=line)
    p.add_argument(
        "zoo",
        metavar="ZOO",
        help="a directory of models (files and `neuralcleanse train` folders) or a manifest: a text file of model "
        "paths, or a CSV with a model column and optional name, data, arch, preprocessing, infected and targets "
        "columns (docs/cli.md)",
    )
    p.add_argument(
        "--data",
        help="clean labelled images for models whose manifest line names none (as scan's --data; default: "
        "none, every line must name its data)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="directory for one report folder per model, zoo.json and zoo.html (required, no default)",
    )
    _add_engine_args(
        p,
        "models scanned at once on a local Ray (default: all cores); 1 without --ray-address scans in this "
        "process, without Ray",
        "scan on",
    )
    p.add_argument(
        "--timeout-per-model",
        type=float,
        metavar="S",
        help="stop a model's scan after S seconds and mark it so (default: no limit)",
    )
    for action in scan._actions:  # the same Action objects, as argparse's parents= shares them
        if action.dest in _ZOO_SCAN_FLAGS:
            p._add_action(action)
    p.set_defaults(verb="scan-zoo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralcleanse", description="Find and remove backdoors in image classifiers (Neural Cleanse)."
    )
    parser.add_argument("--version", action="version", version=f"neuralcleanse {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs (default off)")
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars, nor progress lines when stderr is not a terminal (default off)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def verb(name: str) -> argparse.ArgumentParser:
        line = DESCRIPTIONS[name]
        p = sub.add_parser(name, parents=[common], help=line[0].lower() + line[1:-1], description=line)
        p.set_defaults(verb=name)
        return p

    p = verb("train")
    p.add_argument("--dataset", required=True, help="mnist, gtsrb, cifar10, an .npz file or an image folder")
    p.add_argument("--arch", required=True, choices=["mnist", "gtsrb"], help="the paper's network for that data")
    _add_trigger_args(
        p,
        "; makes a BadNets model, or with trojan[:size=4,position=bottom-right] a Trojan one (the pattern is "
        "crafted to fire the model's own neurons, then the dense layers are retrained); default: none, a clean "
        "model",
    )
    p.add_argument(
        "--poison-rate",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="fraction of the training set poisoned per trigger, in (0, 1) (default 0.1)",
    )
    p.add_argument(
        "--from",
        dest="victim",
        metavar="MODEL_DIR",
        help="Trojan attack on this trained model (saved by train) instead of on one trained first (default: none)",
    )
    p.add_argument("--epochs", type=int, help="training epochs (default: the architecture's, mnist 3, gtsrb 12)")
    _seed(p, "the initialisation, the poisoning and the batches")
    p.add_argument("--device", help=_DEVICE_HELP)
    _add_out_args(p, "the model", "a model")

    p = verb("evaluate")
    _add_model_args(p)
    p.add_argument(
        "--data",
        required=True,
        help="mnist, gtsrb, cifar10, a folder of MNIST IDX files, an .npz or an image folder",
    )
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of a named dataset (default test)")
    _add_trigger_args(p, "; default: the triggers recorded with the model")
    p.add_argument("--json", action="store_true", help="print the figures as JSON (default off: a table)")

    p = verb("scan")
    _add_model_args(p)
    p.add_argument(
        "--data",
        required=True,
        help="clean labelled images: mnist, gtsrb, cifar10, an IDX folder, an .npz or an image folder "
        "(the test split of a named dataset)",
    )
    _add_out_args(p, "report.json, report.html, triggers.npz and pictures", "a report")
    p.add_argument(
        "--mode",
        choices=["fast", "reference"],
        default="fast",
        help="fast: all labels at once; reference: the original code, one label at a time (default fast)",
    )
    p.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="clean images used, spread evenly over labels (default: up to 1000, as the original code)",
    )
    _seed(p, "the initial masks and the batches")
    p.add_argument(
        "--success-threshold",
        type=float,
        metavar="FRACTION",
        help="attack success every reversed trigger must keep, in (0, 1] (default 0.99, the original code's "
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
        "--more-searches",
        type=int,
        metavar="N",
        help="search the smallest labels (up to three under 0.8 of the median trigger) N times more, keeping the "
        "smallest valid trigger: their norms decide the verdict (default: 0)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        help="the model's arithmetic during the search; auto: bfloat16 on CPUs that compute it natively, else float32 "
        "(default: auto in fast mode, float32 in reference mode)",
    )
    p.add_argument(
        "--decision",
        choices=["k-aware-ratio", "k-aware", "log-mad", "paper"],
        default="k-aware-ratio",
        help="how the verdict is decided from the labels' norms: k-aware-ratio (the k-aware test under 0.6 of the "
        "median, or a norm under a quarter of it, or a small label the model favours on clean images, joined by "
        "the next small labels nearer to them than to the rest; then the symmetric check), "
        "k-aware (step-down order-statistic test on log norms, "
        "then the symmetric check), log-mad, or paper (the MAD index exactly); default k-aware-ratio, see "
        "docs/detection.md",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        metavar="SCORE",
        help="the decision's threshold on its score (default: 1 for k-aware-ratio, every criterion at its default; "
        "3 for k-aware, i.e. p < 0.001; 2 for log-mad; --anomaly-threshold for paper)",
    )
    p.add_argument(
        "--anomaly-threshold",
        type=float,
        metavar="INDEX",
        help="the paper's decision flags labels below the median whose anomaly index exceeds this; it decides "
        "the verdict with --decision paper and is reported beside the chosen decision (default 2, the paper's)",
    )
    p.add_argument(
        "--no-blend",
        action="store_true",
        help="search only the paper's per-pixel masks, not also one faint pattern over the whole image per label "
        "(default off: both; --decision paper never searches blends), see docs/detection.md",
    )
    p.add_argument(
        "--no-stimulation",
        action="store_true",
        help="do not drive single neurons of the layer the dense layers read to find a label one neuron hands every "
        "image to (default off: stimulate where the model allows; --decision paper never does), see "
        "docs/detection.md",
    )
    p.add_argument(
        "--no-second-scan",
        action="store_true",
        help="scan once even when the verdict is borderline (default off: a borderline verdict is scanned again "
        "with the next seed and other clean images, and the labels either scan flags are flagged; --decision paper "
        "scans once), see docs/detection.md",
    )
    p.add_argument(
        "--profile",
        default="auto",
        metavar="PROFILE",
        help="how small each label's trigger is on clean models of the task, to discount naturally small labels "
        "by: auto (the built-in profile of --data mnist or cifar10; none for other data), none, a built-in "
        "profile's name or a file written by `neuralcleanse profile` (default auto; --decision paper reads none), "
        "see docs/detection.md",
    )
    p.add_argument(
        "--skip-sanity-check",
        action="store_true",
        help="scan even when the model misclassifies more than half of the clean images (default off: stop)",
    )
    p.add_argument(
        "--allow-few-images",
        action="store_true",
        help="scan even when a label has fewer than 10 clean images, or none; the verdict then carries a "
        "warning (default off: stop and list the short labels)",
    )
    _add_engine_args(
        p,
        "split the labels into N shards searched in parallel on a local Ray (same report as one "
        "process; needs neuralcleanse[ray]; default 1: no sharding)",
        "search the label shards on",
    )
    _add_scan_zoo(sub, common, p)

    p = verb("mitigate")
    _add_model_args(p)
    p.add_argument("--report", required=True, metavar="SCAN_DIR", help="a folder written by `neuralcleanse scan`")
    p.add_argument(
        "--data",
        required=True,
        help="clean labelled data (the training split of a named dataset is worked on, its test split reported "
        "on; other data are split in halves)",
    )
    p.add_argument(
        "--method",
        required=True,
        choices=["filter", "prune", "unlearn"],
        help="filter: reject inputs that excite the trigger's neurons; prune: silence those neurons; unlearn: "
        "fine-tune with the reversed trigger on correctly labelled images (no default: choose one)",
    )
    p.add_argument(
        "--fpr",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="filter: share of clean inputs rejected, in (0, 1) (default 0.05, the paper's)",
    )
    _add_trigger_args(p, "; the true trigger, when known, to measure it too (default: the one recorded, if any)")
    _seed(p, "the fine-tuning and the splits")
    _add_out_args(p, "the patched model (or the filter), mitigation.json and mitigation.html", "a result")

    p = verb("profile")
    p.add_argument(
        "scans",
        nargs="+",
        metavar="SCAN_DIR",
        help="folders written by `neuralcleanse scan` of clean models of one task (two models or more; scans of "
        "one model with several seeds count as one model, by the model report.json names)",
    )
    p.add_argument("--name", required=True, help="what the profile is of, recorded in it and in the reports using it")
    p.add_argument(
        "--out",
        dest="profile_file",
        required=True,
        metavar="FILE",
        help="the profile file to write (JSON), for scan's --profile",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out (default off: stop without writing)"
    )

    p = verb("demo")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="where the reports go (default runs/demo)")
    _seed(p, "the training and the scans")
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="the scans' arithmetic; auto: bfloat16 on CPUs that compute it natively, else float32 (default auto)",
    )
    return parser


def check_values(args: argparse.Namespace) -> None:
    """Refuse flag values no run can use, naming the flag, before anything heavy is loaded.

    The scan's numbers are checked by :class:`~neuralcleanse.config.ScanConfig` (whose messages the scan verb
    maps onto the flags); the others here.
    """
    arch = getattr(args, "arch", None)
    if arch:  # a file of the user's, named from here: workers elsewhere find it too
        args.arch = absolute_arch(arch)
    fractions = {"poison_rate": "--poison-rate", "fpr": "--fpr"}
    for dest, flag in fractions.items():
        value = getattr(args, dest, None)
        if value is not None and not 0 < value < 1:
            raise CLIError(f"{flag} must be a fraction in (0, 1), got {value:g}")
    epochs = getattr(args, "epochs", None)
    if epochs is not None and epochs < 1:
        raise CLIError(f"--epochs must be at least 1, got {epochs}")
    for target in getattr(args, "target", None) or []:
        if target < 0:
            raise CLIError(f"--target must be a label (0 or more), got {target}")
