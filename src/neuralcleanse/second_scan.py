"""A second scan of a borderline verdict, and the verdict of the two scans together.

A scan's verdict is borderline when fewer than :data:`~neuralcleanse.steadiness.STEADY` of the redraws of its norms
within the search's own noise keep it: another seed and other clean images could well give the other verdict. The
scan job then scans again, with the next seed and another clean sample, and flags the labels either scan flags: the
two scans mostly disagree because one of them missed a target (its search stalled, or a second target lay at the
edge of the decision), less often because one flagged a natural label. Chosen on the benchmark zoo's tune half over one
scan and over the labels both scans flag (``benchmarks/results/second_scan.md``; docs/detection.md, "A second scan of
a borderline verdict").

:func:`wants_second_scan` says when; :func:`join_scans` joins the two reports.
"""

from __future__ import annotations

from dataclasses import replace

from .config import ScanConfig
from .scan import ScanReport, SecondScan, borderline_warning
from .steadiness import STEADY

__all__ = ["join_scans", "wants_second_scan"]


def wants_second_scan(report: ScanReport, config: ScanConfig) -> bool:
    """Whether ``report``'s verdict is borderline and ``config`` asks for a second scan then."""
    return config.scans_twice and report.steadiness is not None and report.steadiness < STEADY


def join_scans(first: ScanReport, second: ScanReport) -> ScanReport:
    """``first`` flagging the labels either scan flags, with ``second`` summarised in ``second_scan``.

    Everything else is the first scan's (its decision, its score, its paper's index and its steadiness), but for the
    labels only the second scan flagged: their rows, reversed triggers and symmetric checks are the second's, so the
    trigger a mitigation uses for such a label is the one that flagged it. ``seconds`` is both scans' time."""
    if [r.label for r in first.labels] != [r.label for r in second.labels]:
        raise ValueError(
            f"the two scans must examine the same labels, got {len(first.labels)} and {len(second.labels)} labels"
        )
    added = [t for t in second.flagged if t not in first.flagged]
    positions = [i for i, r in enumerate(first.labels) if r.label in added]
    labels, masks, patterns = list(first.labels), first.masks.clone(), first.patterns.clone()
    blend_masks = None if first.blend_masks is None else first.blend_masks.clone()
    blend_patterns = None if first.blend_patterns is None else first.blend_patterns.clone()
    for i in positions:
        labels[i], masks[i], patterns[i] = second.labels[i], second.masks[i], second.patterns[i]
        if blend_masks is not None and second.blend_masks is not None:
            blend_masks[i] = second.blend_masks[i]
        if blend_patterns is not None and second.blend_patterns is not None:
            blend_patterns[i] = second.blend_patterns[i]
    flagged = [*first.flagged, *added]
    borderline = borderline_warning(first.steadiness if first.steadiness is not None else 1.0)
    found = ", ".join(map(str, second.flagged)) or "nothing"
    joined = (
        f"a second scan (seed {second.seed}, other clean images) flagged {found}, and the verdict flags the labels "
        f"either scan flagged ({_added(added)})"
    )
    return replace(
        first,
        infected=bool(flagged),
        flagged=flagged,
        pairs=[p for p in first.pairs if p.label not in added] + [p for p in second.pairs if p.label in added],
        labels=labels,
        masks=masks,
        patterns=patterns,
        blend_masks=blend_masks,
        blend_patterns=blend_patterns,
        seconds=first.seconds + second.seconds,
        mask_flagged=_joined(first.mask_flagged, second.mask_flagged),
        blend_flagged=_joined(first.blend_flagged, second.blend_flagged),
        blend_cleared=[t for t in _joined(first.blend_cleared, second.blend_cleared) if t not in flagged],
        stimulation_flagged=_joined(first.stimulation_flagged, second.stimulation_flagged),
        warnings=[w for w in first.warnings if not w.startswith(borderline)] + [f"{borderline}; {joined}"],
        second_scan=SecondScan(
            seed=second.seed,
            num_images=second.num_images,
            flagged=list(second.flagged),
            score=second.decision.score,
            steadiness=second.steadiness,
            seconds=second.seconds,
            added=added,
        ),
    )


def _joined(first: list[int], second: list[int]) -> list[int]:
    return [*first, *(t for t in second if t not in first)]


def _added(added: list[int]) -> str:
    if not added:
        return "nothing added"
    return ("label " if len(added) == 1 else "labels ") + ", ".join(map(str, added)) + " added"
