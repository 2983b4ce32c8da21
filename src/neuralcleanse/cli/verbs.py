"""The verbs: each maps its flags onto one job of :mod:`neuralcleanse.jobs` and prints what it returns.

The CLI imports this module only after parsing, so that ``neuralcleanse --help`` loads none of it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_json
from ..config import ANOMALY_THRESHOLD, MIN_CLEAN_ACCURACY, ScanConfig
from ..jobs import demo, evaluate_model, mitigate_model, scan_model, scan_zoo_job, train_model
from ..loading import load_model
from ..preprocess import Preprocessing, parse_value_range
from ..profiles import profile_from_reports
from ..store.mitigation_dir import MITIGATION_FILE, MITIGATION_HTML
from ..store.out_dir import check_out_dir
from ..store.scan_dir import REPORT_FILE, scanned_preprocessing
from ..zoo import zoo_summary
from .bars import ProgressBars, ZooBar
from .errors import CLIError


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
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_model(args: argparse.Namespace, device: torch.device, preprocessing: Any = None) -> Any:
    """The model of ``args``, fed as its preprocessing options say (else as ``preprocessing`` says)."""
    return load_model(
        args.model,
        arch=getattr(args, "arch", None),
        preprocessing=_preprocessing(args) or preprocessing,
        unsafe_pickle=getattr(args, "unsafe_pickle", False),
        map_location=device,
    )


def _preprocessing(args: argparse.Namespace) -> Any:
    """The --value-range/--mean/--std/--channel-order/--layout flags as a Preprocessing, or None if none given."""

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


def cmd_train(args: argparse.Namespace) -> int:

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

    config = _scan_config(args)
    check_out_dir(args.out, REPORT_FILE, args.overwrite, name="--out")  # before the model loads
    _seed_everything(args.seed)
    device = _device(args.device)
    loaded = _load_model(args, device)
    bars = ProgressBars(args.quiet)
    try:
        with _label_shards(args) as search:
            report, out = scan_model(
                loaded, str(args.model), args.data, Path(args.out), config, args.seed, args.overwrite, bars,
                search=search,
            )  # fmt: skip
    finally:
        bars.close()
    _print_verdict(report.to_dict(), out)
    return 0


@contextlib.contextmanager
def _label_shards(args: argparse.Namespace) -> Iterator[Any]:
    """``scan --workers N`` / ``--ray-address``: a search sharded over Ray actors, else None (one process)."""

    workers, address = getattr(args, "workers", None), getattr(args, "ray_address", None)
    if (workers is None or workers == 1) and address is None:
        yield None
        return
    if workers is not None and workers < 1:
        raise CLIError(f"--workers must be at least 1, got {workers}")
    from ..engine import ray_session
    from ..sharding import RayShards, ShardedSearch

    load = functools.partial(_load_module, args.model, getattr(args, "arch", None), _preprocessing(args), args.device)
    with ray_session(workers, address):
        import ray

        shards = workers if workers is not None else max(1, int(ray.cluster_resources().get("CPU", 1)))
        pool = RayShards(shards, load=load)
        try:
            yield ShardedSearch(pool)
        finally:
            pool.close()


def _load_module(path: str, arch: str | None, preprocessing: Any, device: str | None) -> Any:
    """The model of ``path`` as a shard's actor loads it (TorchScript does not pickle)."""

    return load_model(path, arch=arch, preprocessing=preprocessing, map_location=device or "cpu").model


def cmd_scan_zoo(args: argparse.Namespace) -> int:

    config = _scan_config(args)
    _seed_everything(args.seed)
    device = str(_device(args.device))
    bars = ZooBar(args.quiet)
    try:
        result, json_path, html_path = scan_zoo_job(
            args.zoo,
            args.data,
            Path(args.out),
            config,
            seed=args.seed,
            workers=args.workers,
            address=args.ray_address,
            device=device,
            timeout=args.timeout_per_model,
            progress=bars,
            arch=args.arch,
            preprocessing=_preprocessing(args),
        )
    finally:
        bars.close()
    for row in result.rows:
        if row["status"] != "done":
            print(f"{row['model']}: {row['status']}: {row['error']}")
    summary = zoo_summary(result.rows)
    skipped = summary["skipped"]
    print(summary["line"] + (f" ({skipped} already complete, skipped)" if skipped else ""))
    if summary["truth_line"]:
        print(summary["truth_line"])
    print(f"summary: {html_path} (and {json_path.name})")
    return 1 if result.failed else 0


def _scan_config(args: argparse.Namespace) -> Any:
    """The scan flags as a ScanConfig. Its messages start with the field's name, the flag's name with dashes."""

    try:
        return ScanConfig(
            mode=args.mode,
            searches=args.searches,
            more_searches=ScanConfig.more_searches if args.more_searches is None else args.more_searches,
            samples=args.samples,
            success_threshold=args.success_threshold,
            precision=args.precision,
            anomaly_threshold=ANOMALY_THRESHOLD if args.anomaly_threshold is None else args.anomaly_threshold,
            decision=args.decision,
            score_threshold=args.score_threshold,
            min_clean_accuracy=None if args.skip_sanity_check else MIN_CLEAN_ACCURACY,
            allow_few_images=args.allow_few_images,
            blend=not args.no_blend,
            stimulation=not args.no_stimulation,
            second_scan=not args.no_second_scan,
            profile=args.profile,
        )
    except ValueError as exc:
        field, _, rest = str(exc).partition(" ")
        raise CLIError(f"--{field.replace('_', '-')} {rest}") from None


def verdict_line(report: dict[str, Any]) -> str:
    """The scan's verdict in one line: the chosen decision first, the paper's index beside it."""
    verdict = "INFECTED" if report["infected"] else "clean"
    flagged = report["flagged"] or "none"
    score, threshold = report["score"], report["score_threshold"]
    relation = ">" if score > threshold else "<="
    if report["decision"] == "paper":
        why = f"paper's anomaly index {score:.2f} {relation} {threshold:g}"
    else:
        why = f"{report['decision']} score {score:.2f} {relation} {threshold:g}; paper's anomaly index "
        why += f"{report['anomaly_index']:.2f}"
    cleared = "".join(
        f"; label {p['label']} cleared: a natural neighbour of label {p['source']}"
        for p in report.get("pairs") or []
        if p["natural"]
    )
    mask_flagged = report.get("mask_flagged") or []
    cleared += "".join(
        f"; label {t} flagged by its blend trigger" for t in report.get("blend_flagged") or [] if t not in mask_flagged
    )
    cleared += "".join(f"; label {t} cleared: flagged beside a blend target" for t in report.get("blend_cleared") or [])
    flagged_before = set(mask_flagged) | set(report.get("blend_flagged") or [])
    cleared += "".join(
        f"; label {t} flagged by neuron stimulation"
        for t in report.get("stimulation_flagged") or []
        if t not in flagged_before
    )
    added = (report.get("second_scan") or {}).get("added") or []
    if added:
        which = f"label {added[0]}" if len(added) == 1 else "labels " + ", ".join(map(str, added))
        cleared += f"; {which} flagged by a second scan (seed {report['second_scan']['seed']})"
    warnings = "".join(f" (WARNING: {w})" for w in report.get("warnings") or [])
    return f"{verdict}: flagged labels {flagged} ({why}{cleared}){warnings}"


def _print_verdict(report: dict[str, Any], out: Path) -> None:
    print(verdict_line(report))
    rows = sorted(report["labels"], key=lambda r: r["mask_l1"])
    rows = rows[:5] + [r for r in rows[5:] if r["label"] in report["flagged"]]  # a blend target may lie further up
    print("  smallest reversed triggers:")
    print("    label   mask L1   blend L1     score   anomaly index   attack success")
    for r in rows:
        mark = " *" if r["label"] in report["flagged"] else ""
        label, l1, index, success = r["label"], r["mask_l1"], r["anomaly_index"], r["attack_success"]
        blend = "—" if r.get("blend_l1") is None else f"{r['blend_l1']:.1f}"
        print(f"    {label:>5}   {l1:7.1f}   {blend:>8}   {r['score']:7.2f}   {index:13.2f}   {success:14.2%}{mark}")
    print(f"  {report['seconds']:.1f} s, {report['mode']} mode; report: {out / 'report.html'}")


def cmd_mitigate(args: argparse.Namespace) -> int:

    check_out_dir(args.out, MITIGATION_FILE, args.overwrite, name="--out")  # before the model loads
    _seed_everything(args.seed)
    device = _device(args.device)
    loaded = _load_model(args, device, scanned_preprocessing(Path(args.report)))  # as the scan fed it
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
    rows = [("method", result["method"])]
    rows.append(("label" if len(result["labels"]) == 1 else "labels", ", ".join(map(str, result["labels"]))))
    rows += [
        ("clean accuracy", f"{result['clean_accuracy_before']:.2%} -> {result['clean_accuracy_after']:.2%}"),
        (
            "reversed trigger success",
            f"{result['reversed_attack_success_before']:.2%} -> {result['reversed_attack_success_after']:.2%}",
        ),
    ]
    for label, (before, after) in result.get("others_reversed_attack_success", {}).items():
        rows.append((f"label {label}'s reversed trigger success", f"{before:.2%} -> {after:.2%}"))
    if result.get("attack_success_before") is not None:
        rows.append(
            ("true trigger success", f"{result['attack_success_before']:.2%} -> {result['attack_success_after']:.2%}")
        )
    if result.get("false_positive_rate") is not None:
        rows.append(("false-positive rate", f"{result['false_positive_rate']:.2%}"))
    if result.get("false_negative_rate") is not None:
        rows.append(("false-negative rate", f"{result['false_negative_rate']:.2%}"))
    out = Path(args.out)
    if result.get("filter_file"):
        rows.append(("input filter", str(out / result["filter_file"])))
    else:
        patched = out / result["model_file"] if result.get("model_file") else out
        rows.append(("patched model", f"{patched} (load it with neuralcleanse.load_model or `neuralcleanse scan`)"))
    rows.append(("page", str(out / MITIGATION_HTML)))
    rows.append(("figures", str(out / MITIGATION_FILE)))
    _print_table(rows)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:

    _seed_everything(args.seed)
    bars = ProgressBars(args.quiet)
    try:
        results = demo(Path(args.out), seed=args.seed, progress=bars, log=print, precision=args.precision)
    finally:
        bars.close()
    for name, (report, out) in results.items():
        print(f"\n{name}:")
        _print_verdict(report.to_dict(), out)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:

    out = Path(args.profile_file)
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give the profile file's path")
    if out.exists() and not args.overwrite:
        raise CLIError(f"--out {out} exists; pass --overwrite to replace it")
    profile = profile_from_reports(args.scans, args.name)
    if profile.models < 2:
        raise CLIError(f"a profile needs scans of 2 clean models or more, got {profile.models}")
    atomic_write_json(out, profile.to_dict())
    ratios = ", ".join(f"{label}: {r:.2f}" for label, r in enumerate(profile.expected_ratios()))
    print(f"profile {profile.name!r}: {profile.scans} scans of {profile.models} models, weight {profile.weight:.2f}")
    print(f"  each label's share of the median trigger: {ratios}")
    print(f"  written to {out}; scan with --profile {out}")
    return 0


#: The function behind each verb of the parser.
VERBS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "scan": cmd_scan,
    "scan-zoo": cmd_scan_zoo,
    "mitigate": cmd_mitigate,
    "demo": cmd_demo,
    "profile": cmd_profile,
}
