"""Natural label profiles: how small each label's smallest trigger is on clean models of the same task.

Some labels are easy to reach on any model of a task: MNIST's 8 holds most other digits' strokes, CIFAR-10's
automobile and truck look alike. Their smallest triggers lie under the median on clean models too, where a decision
over the norms can take them for a backdoor's target, or count them beside a real target whose trigger is as large.
How small a label is, relative to the median, is a property of the task more than of the model: over the clean
models of the benchmark zoo's tune half, of several architectures, a model's log ratios follow the mean of the
others' with a median correlation of 0.92 on MNIST and 0.78 on CIFAR-10 (benchmarks/results/profiles.md).

A :class:`LabelProfile` holds, per label, the mean log ratio of its norm to the median norm over scans of clean
reference models, and the weight a new clean model follows it with. :func:`discounted` divides each norm of a
naturally small label by its expected ratio (to that weight) before the decision reads it; a naturally large label is
left as it is, so no label is made to look smaller than it is. The paper's decision never reads a profile.

A class's clean gap (:mod:`neuralcleanse.favour`) is a property of the task too: on CIFAR-10's clean and infected
models alike, the bird and the cat lie closer to the model's choice than the median label, the automobile further
(benchmarks/results/profiles.md). A profile may hold the same mean log ratios for the clean gaps; :func:`relative_gaps`
divides every label's gap by its expected ratio (to that profile's weight), in both directions, so the favour criterion
judges how much closer to the model's choice a label lies than its class does on clean models.

The built-in profiles (``profile_data/*.json``) were measured by ``benchmarks/profiles.py`` on the clean models of
the zoo's tune half; :func:`profile_from_scans` builds one from any clean reference scans (``neuralcleanse
profile``).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LabelProfile",
    "ProfileError",
    "builtin_profile",
    "discounted",
    "load_profile",
    "profile_from_reports",
    "profile_from_scans",
    "relative_gaps",
    "resolve_profile",
]

_FLOOR = 1e-6  # norms are clamped to this before the log, as in the decision
_DATA = resources.files("neuralcleanse") / "profile_data"  # the built-in profiles, one file per dataset


class ProfileError(ValueError):
    """A profile that cannot be read or does not fit the model scanned."""


@dataclass(frozen=True)
class LabelProfile:
    """How small each label's smallest trigger is on clean models of one task.

    Attributes:
        name: what the profile is of (a dataset's name, or the name given to :func:`profile_from_scans`).
        log_ratios: per label, the mean over the reference scans of ``log(norm / median norm)``.
        weight: the least-squares slope of a reference model's log ratios on the mean of the other models' (leave
            one model out), clipped to [0, 1]: how closely a new clean model follows the profile; 0 with a single
            reference model.
        models: how many reference models the profile was measured on.
        scans: how many scans of them.
        source: where the reference scans come from.
        gap_log_ratios: per label, the mean over the reference scans whose clean gaps are all known of ``log(gap /
            median gap)``; empty where the profile has none (the gaps are then read as they are).
        gap_weight: as ``weight``, for the gaps' log ratios.
    """

    name: str
    log_ratios: tuple[float, ...]
    weight: float
    models: int
    scans: int
    source: str
    gap_log_ratios: tuple[float, ...] = ()
    gap_weight: float = 0.0

    @property
    def num_labels(self) -> int:
        return len(self.log_ratios)

    def expected_ratios(self) -> list[float]:
        """Per label, the share of the median norm a clean model's trigger is expected to need."""
        return [math.exp(x) for x in self.log_ratios]

    def expected_gap_ratios(self) -> list[float] | None:
        """Per label, the share of the median clean gap a clean model is expected to leave it at (None without)."""
        return [math.exp(x) for x in self.gap_log_ratios] if self.gap_log_ratios else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelProfile:
        try:
            ratios = tuple(float(x) for x in data["log_ratios"])
            profile = cls(
                str(data["name"]),
                ratios,
                float(data["weight"]),
                int(data["models"]),
                int(data["scans"]),
                str(data.get("source", "")),
                tuple(float(x) for x in data.get("gap_log_ratios") or ()),
                float(data.get("gap_weight", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"a profile needs name, log_ratios, weight, models and scans; {exc}") from None
        if len(ratios) < 2 or not all(math.isfinite(x) for x in ratios) or not 0 <= profile.weight <= 1:
            raise ProfileError(f"a profile needs 2 or more finite log ratios and a weight in [0, 1], got {data}")
        gaps = profile.gap_log_ratios
        if gaps and (len(gaps) != len(ratios) or not all(math.isfinite(x) for x in gaps)):
            raise ProfileError(f"a profile's gap log ratios must be finite, one per label ({len(ratios)}), got {gaps}")
        if not 0 <= profile.gap_weight <= 1:
            raise ProfileError(f"a profile's gap weight must lie in [0, 1], got {profile.gap_weight}")
        return profile


def profile_from_scans(
    norms_by_model: dict[str, list[list[float]]],
    name: str,
    source: str = "",
    gaps_by_model: dict[str, list[list[float | None]]] | None = None,
) -> LabelProfile:
    """The profile of clean reference scans: ``norms_by_model`` maps each clean model to the norm vectors of its
    scans (one per scan, every one over the same K labels); ``gaps_by_model``, where given, to their clean gaps
    (a scan with a gap unknown or 0, as a softmax leaves them, is left out of the gaps' ratios)."""
    vectors = _vectors(norms_by_model)
    sizes = {len(v) for scans in vectors.values() for v in scans}
    if not vectors or len(sizes) != 1:
        raise ProfileError(f"a profile needs scans over one number of labels, got label counts {sorted(sizes)}")
    every = [v for scans in vectors.values() for v in scans]
    known = {
        m: [[float(x) for x in g if x is not None] for g in scans if all(x is not None and x > 0 for x in g)]
        for m, scans in (gaps_by_model or {}).items()
    }
    gaps = _vectors(known)
    if any(len(v) not in sizes for scans in gaps.values() for v in scans):
        raise ProfileError(f"a profile's gaps need one per label ({sizes.pop()})")
    every_gap = [v for scans in gaps.values() for v in scans]
    return LabelProfile(
        name,
        tuple(_mean(every)),
        _weight(vectors),
        len(vectors),
        len(every),
        source,
        tuple(_mean(every_gap)) if every_gap else (),
        _weight(gaps) if every_gap else 0.0,
    )


def profile_from_reports(scan_dirs: list[str | Path], name: str) -> LabelProfile:
    """The profile of scan folders (``report.json``, every label scanned) of clean models of one task; scans naming
    the same model (report.json's ``model``) count as one model."""
    by_model: dict[str, list[list[float]]] = {}
    gaps_by_model: dict[str, list[list[float | None]]] = {}
    for folder in scan_dirs:
        path = Path(folder) / "report.json"
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            rows = sorted(report["labels"], key=lambda r: r["label"])
            norms = [float(r["mask_l1"]) for r in rows]
            gaps = [None if r.get("clean_gap") is None else float(r["clean_gap"]) for r in rows]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{path}: not a readable scan report ({exc})") from None
        if [r["label"] for r in rows] != list(range(len(rows))):
            raise ProfileError(f"{path}: a profile needs every label scanned, got labels {[r['label'] for r in rows]}")
        model = str(report.get("model") or folder)
        by_model.setdefault(model, []).append(norms)
        gaps_by_model.setdefault(model, []).append(gaps)
    source = f"neuralcleanse profile: {len(scan_dirs)} scans of {len(by_model)} clean models"
    return profile_from_scans(by_model, name, source, gaps_by_model)


def _vectors(by_model: dict[str, list[list[float]]]) -> dict[str, list[list[float]]]:
    """Each model's scans as log ratios to their median (models without a scan left out)."""
    return {m: [_log_ratios(v) for v in scans] for m, scans in by_model.items() if scans}


def _mean(vectors: list[list[float]]) -> list[float]:
    return [statistics.fmean(column) for column in zip(*vectors, strict=True)]


def _log_ratios(norms: list[float]) -> list[float]:
    median = statistics.median(norms)
    if not median > 0 or min(norms) < 0:
        raise ProfileError(f"norms must be >= 0 with a positive median, got {norms}")
    return [math.log(max(n, _FLOOR) / median) for n in norms]


def _weight(vectors: dict[str, list[list[float]]]) -> float:
    """Slope through the origin of each model's log ratios on the mean of the other models' scans."""
    if len(vectors) < 2:
        return 0.0
    cross = square = 0.0
    for model, scans in vectors.items():
        mean = _mean([v for m, s in vectors.items() if m != model for v in s])
        for v in scans:
            cross += sum(a * b for a, b in zip(mean, v, strict=True))
            square += sum(a * a for a in mean)
    return min(1.0, max(0.0, cross / square)) if square > 0 else 0.0


def discounted(norms: torch.Tensor, profile: LabelProfile | None) -> torch.Tensor:
    """``norms`` (K,) with each naturally small label's divided by its expected ratio to the profile's weight
    (``norm / ratio**weight`` where the profile's ratio is under 1); the norms as they are without a profile."""
    if profile is None:
        return norms
    if norms.numel() != profile.num_labels:
        raise ProfileError(f"the profile {profile.name!r} has {profile.num_labels} labels, the scan {norms.numel()}")
    small = torch.tensor(profile.log_ratios, dtype=torch.float64).clamp_max(0.0)
    return (norms.double() * torch.exp(-profile.weight * small)).to(norms.dtype)


def relative_gaps(gaps: torch.Tensor, profile: LabelProfile | None) -> torch.Tensor:
    """``gaps`` (K,) each divided by its expected ratio to the profile's gap weight (``gap / ratio**gap_weight``,
    whichever side of 1 the ratio lies; unknown gaps stay NaN); the gaps as they are without a profile or where the
    profile has no gap ratios."""
    if profile is None or not profile.gap_log_ratios:
        return gaps
    if gaps.numel() != profile.num_labels:
        raise ProfileError(f"the profile {profile.name!r} has {profile.num_labels} labels, the scan {gaps.numel()}")
    expected = torch.tensor(profile.gap_log_ratios, dtype=torch.float64)
    return (gaps.double() * torch.exp(-profile.gap_weight * expected)).to(gaps.dtype)


def builtin_profile(dataset: str, num_labels: int) -> LabelProfile | None:
    """The built-in profile of a dataset (``"mnist"``, ``"cifar10"``) over ``num_labels`` labels, or
    ``None`` where there is none."""
    profile = _builtin(dataset)
    return profile if profile is not None and profile.num_labels == num_labels else None


def _builtin(name: str) -> LabelProfile | None:
    resource = _DATA / f"{name}.json"
    return LabelProfile.from_dict(json.loads(resource.read_text())) if resource.is_file() else None


def load_profile(path: str | Path) -> LabelProfile:
    """A profile written by ``neuralcleanse profile`` (or :meth:`LabelProfile.to_dict` as JSON)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read a profile ({exc})") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return LabelProfile.from_dict(data)


def resolve_profile(setting: str, data: str | None, num_labels: int) -> LabelProfile | None:
    """The profile a scan uses: ``"auto"``, the built-in profile of ``data`` (the clean data's name: ``"mnist"``,
    ``"cifar10"``) where there is one for ``num_labels`` labels; ``"none"``, none; a built-in
    profile's name, that profile; else the path of a profile file. A profile named must have ``num_labels``
    labels."""
    if setting == "none":
        return None
    if setting == "auto":
        return None if data is None else builtin_profile(data, num_labels)
    profile = _builtin(setting) or load_profile(setting)
    if profile.num_labels != num_labels:
        raise ProfileError(f"{setting}: the profile has {profile.num_labels} labels, the model {num_labels}")
    return profile
