"""The Neural Cleanse scan: reverse-engineer a trigger per label, then the MAD outlier test over their norms.

``NeuralCleanse(model).scan(images, labels)`` answers the paper's three questions: is the model infected (any
label flagged), which label (flagged labels: norm below the median, anomaly index above 2), which trigger (the
reversed mask and pattern of that label).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ._torch import autocast, input_memory_format, model_device
from .blends import blend_companions, blend_suspects
from .compactness import compactness
from .config import (
    ANOMALY_THRESHOLD,
    BLEND_SEARCHES,
    MIN_IMAGES_PER_LABEL,
    MORE_SEARCHED_LABELS,
    MORE_SEARCHES_RATIO,
    ScanConfig,
)
from .decision import MIN_LABELS, Decision, decide
from .favour import clean_gaps
from .metrics import outputs_of, predict
from .outliers import AnomalyResult, anomaly_index
from .pairs import PairCheck, symmetric_check
from .probe import ModelOutputs, probe_outputs
from .profiles import LabelProfile, ProfileError, discounted, relative_gaps
from .progress import ProgressCallback, report
from .reverse import ReverseResult, reverse_engineer
from .saturation import Float64LogProbabilities, saturates
from .steadiness import STEADY, steadiness
from .stimulation import Stimulation, scan_stimulation, stimulation_suspects
from .triggers import Trigger
from .versions import versions

__all__ = [
    "FewImagesError",
    "LabelResult",
    "NeuralCleanse",
    "SanityCheckError",
    "ScanReport",
    "SecondScan",
    "describe_short_labels",
    "short_labels",
    "trigger_success",
]

logger = logging.getLogger(__name__)


class SanityCheckError(ValueError):
    """The model's accuracy on the supplied clean images is too low for a meaningful scan; ``accuracy`` is what
    it reached."""

    def __init__(self, message: str, accuracy: float | None = None) -> None:
        super().__init__(message)
        self.accuracy = accuracy


class FewImagesError(ValueError):
    """Some label has too few clean images (or none) for a meaningful scan; ``short`` lists them."""

    def __init__(self, message: str, short: list[tuple[int, int]]) -> None:
        super().__init__(message)
        self.short = short


def short_labels(counts: list[int], minimum: int = MIN_IMAGES_PER_LABEL) -> list[tuple[int, int]]:
    """``(label, count)`` of every label with fewer than ``minimum`` images, given each label's ``counts``."""
    return [(label, n) for label, n in enumerate(counts) if n < minimum]


def describe_short_labels(short: list[tuple[int, int]], limit: int | None = 5) -> str:
    """``"label 3 has 0, label 5 has 4"``; past ``limit`` labels (None: no limit), ``"... and N more"``, so that
    the message of a model with a thousand labels stays one line."""
    shown = short if limit is None else short[:limit]
    text = ", ".join(f"label {label} has {n}" for label, n in shown)
    return text + (f" and {len(short) - len(shown)} more" if len(shown) < len(short) else "")


@dataclass(frozen=True)
class LabelResult:
    """One label's reversed trigger, summarised. ``attack_success``: share of the scan's clean images the kept
    trigger sends to the label (:func:`trigger_success`); ``found``: whether the search reached the threshold."""

    label: int
    mask_l1: float
    attack_success: float
    anomaly_index: float
    found: bool  # a mask reaching the attack-success threshold was found
    epochs: int
    image_passes: int
    score: float  # what the model-level decision computed for this label (Decision.per_label)
    clean_gap: float | None = None  # how far below the model's choice the label lies on clean images (favour.py)
    compactness: float | None = None  # share of the mask's L1 mass in its densest square window (compactness.py)
    blend_l1: float | None = None  # norm of the smallest blend trigger (opacity x pixels), when one was searched
    #: the level at which one neuron hands the label the clean images, over the median label's (stimulation.py)
    stimulation: float | None = None
    #: the share of the median norm the natural label profile expects of the label on a clean model (profiles.py);
    #: the decision read the norm divided by it (to the profile's weight) where it is under 1
    natural_ratio: float | None = None
    #: the share of the median clean gap the profile expects of the label on a clean model; the decision read the
    #: clean gap divided by it (to the profile's gap weight)
    natural_gap_ratio: float | None = None


@dataclass(frozen=True)
class SecondScan:
    """The second scan of a borderline verdict (:mod:`~neuralcleanse.second_scan`), summarised: its ``seed`` and
    clean images, what it flagged and how steady its own verdict was; ``added``: the labels it flagged and the first
    scan did not, whose rows, masks and patterns in the joined report are its own."""

    seed: int | None
    num_images: int
    flagged: list[int]
    score: float
    steadiness: float | None
    seconds: float
    added: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScanReport:
    """What a scan found. ``to_dict()`` is the content of ``report.json``; the masks and patterns of all labels
    are in ``masks`` (K, 1, H, W) and ``patterns`` (K, C, H, W), in the order of ``labels``.

    ``infected`` and ``flagged`` are the chosen decision's verdict (``decision``); ``anomaly_index`` and
    ``paper_flagged`` are the paper's, kept beside it. ``flagged`` joins the mask search's verdict
    (``mask_flagged``, after the symmetric checks), the blend search's (``blend_flagged``), less the labels
    the mask search flagged only beside a blend target (``blend_cleared``, :mod:`~neuralcleanse.blends`), and the
    neuron stimulation's (``stimulation_flagged``, :mod:`~neuralcleanse.stimulation`)."""

    infected: bool
    anomaly_index: float
    flagged: list[int]
    decision: Decision
    paper_flagged: list[int]
    pairs: list[PairCheck]
    labels: list[LabelResult]
    median_l1: float
    mad_l1: float
    seconds: float
    mode: str
    seed: int | None
    num_images: int
    clean_accuracy: float | None
    outputs_probabilities: bool
    config: dict[str, Any]
    masks: torch.Tensor = field(repr=False)
    patterns: torch.Tensor = field(repr=False)
    versions: dict[str, str] = field(default_factory=versions)
    warnings: list[str] = field(default_factory=list)  # what makes the verdict less sure, in words
    #: the share of redraws of the norms within the search's noise that keep the verdict (steadiness.py)
    steadiness: float | None = None
    mask_flagged: list[int] = field(default_factory=list)
    blend_flagged: list[int] = field(default_factory=list)
    blend_cleared: list[int] = field(default_factory=list)
    #: the blend search's triggers (K, 1, H, W) (one opacity filling each mask) and (K, C, H, W), in the order of
    #: ``labels``; None when no blend search ran
    blend_masks: torch.Tensor | None = field(default=None, repr=False)
    blend_patterns: torch.Tensor | None = field(default=None, repr=False)
    stimulation_flagged: list[int] = field(default_factory=list)
    #: the layer stimulated; None when the scan did not stimulate (TorchScript, layers not read by dense layers
    #: alone, or the paper's decision)
    stimulation_layer: str | None = None
    #: the second scan that joined a borderline verdict (its flagged labels are in ``flagged``); None when there
    #: was none
    second_scan: SecondScan | None = None
    #: the natural label profile the decision read the norms through (profiles.py); None when it read them as
    #: they are
    profile: LabelProfile | None = None

    def __repr__(self) -> str:
        verdict = "infected" if self.infected else "clean"
        return (
            f"ScanReport({verdict}, flagged={self.flagged}, anomaly_index={self.anomaly_index:.2f}, "
            f"labels={len(self.labels)}, masks={tuple(self.masks.shape)}, mode={self.mode!r}, "
            f"images={self.num_images}, seconds={self.seconds:.1f}"
            + (f", warnings={len(self.warnings)}" if self.warnings else "")
            + ")"
        )

    def trigger(self, label: int) -> Trigger:
        """The reversed trigger of ``label``: the blend search's for a label the blend search flagged (unlearning
        with it removes a blend backdoor more fully than with the mask search's: docs/how-it-works.md), else the
        mask search's."""
        pos = [r.label for r in self.labels].index(label)
        if label in self.blend_flagged and self.blend_masks is not None and self.blend_patterns is not None:
            spec = f"reversed blend trigger of label {label}"
            return Trigger(self.blend_masks[pos], self.blend_patterns[pos], spec=spec)
        return Trigger(self.masks[pos], self.patterns[pos], spec=f"reversed trigger of label {label}")

    def by_blend(self, label: int) -> bool:
        """Whether ``label`` is flagged by the blend search alone (its mask search left it unflagged)."""
        return label in self.blend_flagged and label not in self.mask_flagged

    def to_dict(self) -> dict[str, Any]:
        out = {
            "infected": self.infected,
            "anomaly_index": self.anomaly_index,
            "flagged": list(self.flagged),
            "decision": self.decision.method,
            "score": self.decision.score,
            "score_threshold": self.decision.threshold,
            "paper_flagged": list(self.paper_flagged),
            "pairs": [p.to_dict() for p in self.pairs],
            "labels": [asdict(r) for r in self.labels],
            "median_l1": self.median_l1,
            "mad_l1": self.mad_l1,
            "anomaly_threshold": self.config.get("anomaly_threshold", ANOMALY_THRESHOLD),
            "seconds": self.seconds,
            "mode": self.mode,
            "seed": self.seed,
            "num_images": self.num_images,
            "clean_accuracy": self.clean_accuracy,
            "outputs_probabilities": self.outputs_probabilities,
            "image_passes_per_label": float(np.mean([r.image_passes for r in self.labels])),
            "config": self.config,
            "versions": self.versions,
            "warnings": list(self.warnings),
            "verdict_steadiness": self.steadiness,
            "mask_flagged": list(self.mask_flagged),
            "blend_flagged": list(self.blend_flagged),
            "blend_cleared": list(self.blend_cleared),
            "stimulation_flagged": list(self.stimulation_flagged),
            "stimulation_layer": self.stimulation_layer,
            "second_scan": None if self.second_scan is None else self.second_scan.to_dict(),
            "profile": None if self.profile is None else self.profile.to_dict(),
        }
        return out


class NeuralCleanse:
    """Scan a classifier for backdoors.

    Args:
        model: takes (N, C, H, W) images in [0, 1] and returns (N, K) logits or probabilities. It is frozen and
            in eval mode during the scan; its mode and ``requires_grad`` flags are restored afterwards.
        config: how the scan runs and decides (:class:`~neuralcleanse.config.ScanConfig`; fast mode by default).
        outputs: what the model returns, when the caller has probed it already (else read from the images).
        progress: receives :class:`~neuralcleanse.progress.ProgressEvent` s (phases ``"check"``, ``"reverse"``,
            ``"restart"``, ``"measure"``).
        search: runs each batched search; :func:`~neuralcleanse.reverse.reverse_engineer` by default, or a
            :class:`~neuralcleanse.sharding.ShardedSearch` that splits the labels over workers (same report).
        profile: the natural label profile of the model's task (:mod:`~neuralcleanse.profiles`, one ratio per
            output), through which the decision reads the norms; ignored by the paper's decision and when
            ``config.profile`` is ``"none"``.

    Example:
        >>> report = NeuralCleanse(model).scan(images, labels, seed=0)  # doctest: +SKIP
        >>> report.infected, report.flagged  # doctest: +SKIP
        (True, [7])
    """

    def __init__(
        self,
        model: nn.Module,
        config: ScanConfig | None = None,
        *,
        outputs: ModelOutputs | None = None,
        progress: ProgressCallback | None = None,
        search: Callable[..., ReverseResult] = reverse_engineer,
        profile: LabelProfile | None = None,
    ) -> None:
        if config is not None and not isinstance(config, ScanConfig):
            raise TypeError(f"config must be a ScanConfig, got {type(config).__name__}")
        self.model = model
        self.config = config if config is not None else ScanConfig()
        self.outputs = outputs
        self.progress = progress
        self.search = search
        self.profile = profile if self.config.reads_profile else None

    def scan(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        targets: list[int] | None = None,
        seed: int | None = 0,
    ) -> ScanReport:
        """Scan the model with clean ``images`` (N, C, H, W) in [0, 1].

        Args:
            images: clean images; the paper uses a small set (e.g. 1000 for GTSRB).
            labels: their true labels, for the sanity check of the model's accuracy (optional).
            targets: the labels to examine; all of the model's outputs by default.
            seed: seeds the random initial masks and the batches; the same seed gives the same report on the same
                machine (bfloat16 on several threads has been seen to vary rarely: docs/cli.md, ``--seed``).
        """
        start = time.perf_counter()
        _check_images(images)
        outputs = self.outputs or probe_outputs(self.model, images[:32].to(model_device(self.model)))
        if outputs.probabilities and saturates(self.model, images, seed or 0, self.config.reverse):
            return self._scan_in_float64(images, labels, targets, seed, outputs)
        num_classes = outputs.num_outputs
        if labels is not None:
            report(self.progress, "check", 0, 1)
        clean_outputs = outputs_of(self.model, images)  # read by the accuracy check, the gaps and the pair checks
        clean_acc = None if labels is None else self._check_accuracy(clean_outputs, labels, num_classes)
        warnings = [] if labels is None else self._check_counts(labels, num_classes)
        targets = _scanned_labels(targets, num_classes)
        judged = len(targets) >= MIN_LABELS
        if not judged:
            warnings.append(
                f"only {len(targets)} labels were scanned: no label can be judged against the others (the decision "
                f"needs {MIN_LABELS}), so the verdict says nothing about a backdoor"
            )

        # The mask search and its verdict: the chosen decision over the norms, then the symmetric checks.
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        result = self._reverse(images, targets, generator, outputs.probabilities)
        if self.config.more_searches and judged:
            result = self._search_smallest(images, generator, outputs.probabilities, result)
        success = trigger_success(self.model, images, result, self.progress)
        gaps = clean_gaps(clean_outputs, outputs.probabilities)[result.labels]
        profile = self._profile(targets, num_classes)
        decided = discounted(result.norms, profile)  # naturally small labels' norms, read as a clean model's
        leaning = relative_gaps(gaps, profile)  # each label's gap over its class's on clean models of the task
        pixels = images.shape[-2] * images.shape[-1]
        verdict = decide(decided, self.config.decision, self.config.decision_threshold, leaning, pixels)
        suspects = [targets[i] for i in verdict.flagged]
        pairs = self._check_pairs(images, labels, suspects, result, generator, outputs.probabilities, clean_outputs)
        natural = {p.label for p in pairs if p.natural}
        mask_flagged = [t for t in suspects if t not in natural]

        # The blend search and neuron stimulation flag labels of their own (the blend search also clears the labels
        # the mask search flagged only beside a blend target).
        blend: ReverseResult | None = None
        blend_flagged: list[int] = []
        cleared: list[int] = []
        if self.config.searches_blends and judged:
            blend, blend_flagged, cleared = self._blends(images, targets, generator, outputs, result, mask_flagged)
        stimulation = self._stimulate(images, clean_outputs)
        stimulation_flagged = (
            [] if stimulation is None else [k for k in stimulation_suspects(stimulation) if k in targets]
        )
        flagged = [t for t in mask_flagged if t not in cleared] + [t for t in blend_flagged if t not in mask_flagged]
        flagged += [t for t in stimulation_flagged if t not in flagged]

        steady = steadiness(
            decided,
            self.config.decision,
            self.config.decision_threshold,
            leaning,
            blend_norms=None if blend is None else blend.norms,
            pixels=pixels,
        )
        if judged and steady < STEADY:
            warnings.append(borderline_warning(steady) + "; scan again with another seed and other clean images")
        outliers = anomaly_index(result.norms, self.config.anomaly_threshold)
        return ScanReport(
            infected=bool(flagged),
            anomaly_index=outliers.model_index,
            flagged=flagged,
            decision=verdict,
            paper_flagged=[targets[i] for i in outliers.flagged],
            pairs=pairs,
            labels=_label_rows(result, success, outliers, verdict, gaps, blend, stimulation, profile),
            median_l1=outliers.median,
            mad_l1=outliers.mad,
            seconds=time.perf_counter() - start,
            mode=self.config.mode,
            seed=seed,
            num_images=int(images.shape[0]),
            clean_accuracy=clean_acc,
            outputs_probabilities=outputs.probabilities,
            config=self.config.to_dict(result.compute_dtype),
            masks=result.masks,
            patterns=result.patterns,
            warnings=warnings,
            steadiness=steady,
            mask_flagged=mask_flagged,
            blend_flagged=blend_flagged,
            blend_cleared=cleared,
            blend_masks=None if blend is None else blend.masks,
            blend_patterns=None if blend is None else blend.patterns,
            stimulation_flagged=stimulation_flagged,
            stimulation_layer=None if stimulation is None else stimulation.layer,
            profile=profile,
        )

    def _scan_in_float64(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        targets: list[int] | None,
        seed: int | None,
        outputs: ModelOutputs,
    ) -> ScanReport:
        """The scan of the model read as float64 log-probabilities (:class:`~neuralcleanse.saturation.
        Float64LogProbabilities`), reported as this model's: its softmax rounds some label to 0 where a search
        starts (:func:`~neuralcleanse.saturation.saturates`). Its searches run in this process: workers that load
        the model from its file (:class:`~neuralcleanse.sharding.RayShards`) would search it unwrapped."""
        model = Float64LogProbabilities(self.model)
        logits = replace(outputs, probabilities=False)
        scanner = NeuralCleanse(model, self.config, outputs=logits, progress=self.progress, profile=self.profile)
        result = scanner.scan(images, labels, targets, seed)
        note = (
            "the model's softmax rounds some labels' probabilities to 0 on the noisy images a trigger search starts "
            "from, so it was scanned in float64 (the log of its outputs read as logits), several times slower"
        )
        return replace(
            result,
            outputs_probabilities=True,
            config={**result.config, "compute_dtype": "float64"},
            warnings=[*result.warnings, note],
        )

    def _profile(self, targets: list[int], num_classes: int) -> LabelProfile | None:
        """The scan's profile over the labels scanned, in their order."""
        if self.profile is None:
            return None
        if self.profile.num_labels != num_classes:
            raise ProfileError(
                f"the profile {self.profile.name!r} has {self.profile.num_labels} labels, the model {num_classes}"
            )
        gaps = self.profile.gap_log_ratios
        return replace(
            self.profile,
            log_ratios=tuple(self.profile.log_ratios[t] for t in targets),
            gap_log_ratios=tuple(gaps[t] for t in targets) if gaps else (),
        )

    def _check_pairs(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        suspects: list[int],
        result: ReverseResult,
        generator: torch.Generator,
        probabilities: bool,
        clean_outputs: torch.Tensor,
    ) -> list[PairCheck]:
        """The symmetric check of every label the decision flagged (:mod:`~neuralcleanse.pairs`); none without
        suspects, without the clean images' labels, or when the config checks no pairs."""
        if not (suspects and labels is not None and self.config.checks_pairs):
            return []
        report(self.progress, "pairs", 0, len(suspects))
        norms = dict(zip(result.labels.tolist(), result.norms.tolist(), strict=True))
        pairs = symmetric_check(
            self.model,
            images,
            labels,
            suspects,
            norms,
            self.config.reverse,
            generator,
            probabilities,
            outputs=clean_outputs,
        )
        report(self.progress, "pairs", len(suspects), len(suspects))
        return pairs

    def _stimulate(self, images: torch.Tensor, clean_outputs: torch.Tensor) -> Stimulation | None:
        """Neuron stimulation (:mod:`~neuralcleanse.stimulation`) when the config asks for it and the model allows
        it, else None."""
        if not self.config.stimulates:
            return None
        report(self.progress, "stimulate", 0, 1)
        stimulation = scan_stimulation(self.model, images, clean_outputs)
        report(self.progress, "stimulate", 1, 1)
        return stimulation

    def _blends(
        self,
        images: torch.Tensor,
        targets: list[int],
        generator: torch.Generator,
        outputs: ModelOutputs,
        masks: ReverseResult,
        mask_flagged: list[int],
    ) -> tuple[ReverseResult, list[int], list[int]]:
        """The blend search of every label, the labels its verdict flags, and the labels among ``mask_flagged`` it
        clears as a blend target's companions (:mod:`~neuralcleanse.blends`)."""
        progress = _renamed(self.progress, "blend")
        labels = targets * BLEND_SEARCHES
        blend = self.search(
            self.model, images, labels, self.config.blend_search, generator, outputs.probabilities, progress
        )
        blend = blend.best_of_restarts(BLEND_SEARCHES)
        found = blend_suspects(blend.norms)
        kept = [targets.index(t) for t in mask_flagged]
        cleared = blend_companions(masks.norms, kept, found, blend.norms)
        return blend, [targets[i] for i in found], [targets[i] for i in cleared]

    def _check_counts(self, labels: torch.Tensor, num_classes: int) -> list[str]:
        """Refuse (or, when the config allows it, warn about) labels with too few clean images."""
        short = short_labels(torch.bincount(labels, minlength=num_classes).tolist())
        if not short:
            return []
        if not self.config.allow_few_images:
            raise FewImagesError(
                f"too few clean images for a scan: {describe_short_labels(short)} (at least {MIN_IMAGES_PER_LABEL} "
                "of every label: each reversed trigger must move the images of all the others); give more images, "
                "or set ScanConfig(allow_few_images=True) to scan anyway",
                short,
            )
        message = (
            f"scanned with too few clean images: {describe_short_labels(short)} (fewer than "
            f"{MIN_IMAGES_PER_LABEL}); the verdict may not hold"
        )
        logger.info(message)
        return [message]

    def _check_accuracy(self, outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
        """The model's accuracy on the labelled clean images, from its ``outputs`` for them; refuse a scan the model
        and data disagree on."""
        if labels.shape != outputs.shape[:1]:
            raise ValueError(f"labels must have shape ({outputs.shape[0]},), got {tuple(labels.shape)}")
        if int(labels.max()) >= num_classes or int(labels.min()) < 0:
            raise ValueError(
                f"the labels go up to {int(labels.max())} but the model has {num_classes} outputs "
                f"(labels 0..{num_classes - 1})"
            )
        clean_acc = float((outputs.argmax(dim=1) == labels.cpu()).float().mean())
        report(self.progress, "check", 1, 1, accuracy=clean_acc)
        floor = self.config.min_clean_accuracy
        if floor is not None and clean_acc < floor:
            raise SanityCheckError(
                f"the model classifies only {clean_acc:.1%} of the clean images correctly (expected at "
                f"least {floor:.0%}): the images are probably not preprocessed the way the "
                "model expects (value range, mean/std, channel order or layout), or the labels do not match",
                clean_acc,
            )
        return clean_acc

    def _reverse(
        self, images: torch.Tensor, targets: list[int], generator: torch.Generator, probabilities: bool
    ) -> ReverseResult:
        """Every label searched ``num_searches`` times, keeping its smallest valid mask. Fast mode searches all
        labels at once (the first search, then the others together); reference mode one label at a time."""
        searches, search = self.config.num_searches, self.config.reverse
        if self.config.mode == "fast":
            first = self.search(self.model, images, targets, search, generator, probabilities, self.progress)
            if searches == 1:
                return first
            more = self.search(
                self.model,
                images,
                targets * (searches - 1),
                search,
                generator,
                probabilities,
                _renamed(self.progress, "restart"),
            )
            return ReverseResult.concat([first, more]).best_of_restarts(searches)
        parts = []
        for i, t in enumerate(targets):
            tries = self.search(self.model, images, [t] * searches, search, generator, probabilities)
            parts.append(tries.best_of_restarts(searches))
            report(self.progress, "reverse", i + 1, len(targets), label=t)
        return ReverseResult.concat(parts)

    def _search_smallest(
        self, images: torch.Tensor, generator: torch.Generator, probabilities: bool, result: ReverseResult
    ) -> ReverseResult:
        """``result`` with its smallest labels (:data:`~neuralcleanse.config.MORE_SEARCHED_LABELS` under
        :data:`~neuralcleanse.config.MORE_SEARCHES_RATIO` of the median norm) searched ``more_searches`` times
        more, all together, each keeping the smallest valid mask of all its searches."""
        order = result.norms.argsort()[:MORE_SEARCHED_LABELS]
        index = order[result.norms[order] < MORE_SEARCHES_RATIO * result.norms.median()]
        if index.numel() == 0:
            return result
        more = self.config.more_searches
        labels = result.labels[index].tolist() * more
        again = self.search(
            self.model, images, labels, self.config.reverse, generator, probabilities, _renamed(self.progress, "more")
        )
        kept = ReverseResult.concat([result.rows(index), again]).best_of_restarts(more + 1)
        return result.with_rows(index, kept)


def _scanned_labels(targets: list[int] | None, num_classes: int) -> list[int]:
    """The labels a scan examines: ``targets`` (every output's by default), at least two of the model's."""
    targets = list(range(num_classes)) if targets is None else [int(t) for t in targets]
    if len(targets) < 2 or min(targets) < 0 or max(targets) >= num_classes:
        raise ValueError(f"targets must be at least 2 labels in 0..{num_classes - 1}, got {targets}")
    return targets


def _label_rows(
    result: ReverseResult,
    success: torch.Tensor,
    outliers: AnomalyResult,
    verdict: Decision,
    gaps: torch.Tensor,
    blend: ReverseResult | None,
    stimulation: Stimulation | None,
    profile: LabelProfile | None,
) -> list[LabelResult]:
    """One :class:`LabelResult` per label searched, in the search's order."""
    natural = None if profile is None else profile.expected_ratios()
    natural_gaps = None if profile is None else profile.expected_gap_ratios()
    return [
        LabelResult(
            int(t),
            float(result.norms[i]),
            float(success[i]),
            float(outliers.indices[i]),
            bool(result.found[i]),
            int(result.epochs[i]),
            int(result.image_passes[i]),
            float(verdict.per_label[i]),
            None if math.isnan(gaps[i]) else float(gaps[i]),
            float(share),
            None if blend is None else float(blend.norms[i]),
            None if stimulation is None else stimulation.ratios[t],
            None if natural is None else natural[i],
            None if natural_gaps is None else natural_gaps[i],
        )
        for i, (t, share) in enumerate(zip(result.labels.tolist(), compactness(result.masks), strict=True))
    ]


def borderline_warning(steady: float) -> str:
    """The warning of a verdict kept by only ``steady`` of the redraws of its norms."""
    return (
        f"the verdict is borderline: {1 - steady:.0%} of redraws of the labels' norms within the search's own noise "
        "give the other verdict"
    )


def trigger_success(
    model: nn.Module, images: torch.Tensor, result: ReverseResult, progress: ProgressCallback | None = None
) -> torch.Tensor:
    """(K,) share of all ``images`` that each label's kept trigger sends to that label, in the search's precision.

    The search keeps a mask once its success over the images of its last few epochs reaches the threshold, a
    figure selected for being high; the report gives this one, measured again on the whole sample. Like the
    search (and the original code), it counts the label's own images too."""
    device, dtype = model_device(model), getattr(torch, result.compute_dtype)
    images = images.contiguous(memory_format=input_memory_format(model, images[:4].to(device)))  # as the search
    rates = []
    with autocast(device, dtype):
        for i, (mask, pattern, label) in enumerate(
            zip(result.masks, result.patterns, result.labels.tolist(), strict=True)
        ):
            predicted = predict(model, images, trigger=Trigger(mask, pattern))
            rates.append(float((predicted == label).float().mean()))
            report(progress, "measure", i + 1, result.labels.numel(), label=label)
    return torch.tensor(rates)


def _renamed(progress: ProgressCallback | None, phase: str) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda event: progress(replace(event, phase=phase))


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {shape}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; divide 8-bit images by 255")
