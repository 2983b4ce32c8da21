"""The command line before any work: help for every flag with its default, one-line descriptions, flag errors
that name the flag, and a ``--help`` that loads neither torch nor matplotlib."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from neuralcleanse.cli import build_parser, main
from neuralcleanse.cli.parser import DESCRIPTIONS


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_flag_of_every_verb_has_help_with_its_default():
    verbs = _verbs(build_parser())
    assert set(verbs) == set(DESCRIPTIONS)
    for name, parser in verbs.items():
        assert parser.description == DESCRIPTIONS[name] and "\n" not in parser.description
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[-1] if action.option_strings else action.dest
            assert action.help and action.help.strip(), f"{name} {flag} has no help"
            if action.option_strings and not action.required:
                assert "default" in action.help, f"{name} {flag}: the help does not say the default"


def test_defaults_written_in_the_parser_are_the_librarys():
    from neuralcleanse.config import ANOMALY_THRESHOLD, FAST, FAST_SEARCHES, MIN_IMAGES_PER_LABEL
    from neuralcleanse.jobs.train import DEFAULT_TRAINING
    from neuralcleanse.mitigate.filter import FALSE_POSITIVE_RATE

    verbs = _verbs(build_parser())
    helps = {a.dest: a.help for a in verbs["scan"]._actions}
    assert f"default {ANOMALY_THRESHOLD:g}" in helps["anomaly_threshold"]
    assert f"default {FAST.threshold:g}" in helps["success_threshold"]
    assert f"{FAST_SEARCHES} in fast mode" in helps["searches"]
    assert f"fewer than {MIN_IMAGES_PER_LABEL} clean images" in helps["allow_few_images"]
    assert verbs["mitigate"].get_default("fpr") == FALSE_POSITIVE_RATE
    epochs = {a.dest: a.help for a in verbs["train"]._actions}["epochs"]
    assert all(f"{arch} {config.epochs}" in epochs for arch, config in DEFAULT_TRAINING.items())


def test_help_loads_neither_torch_nor_matplotlib():
    code = (
        "import sys\n"
        "from neuralcleanse.cli import main\n"
        "for argv in (['--help'], ['scan', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import neuralcleanse\n"
        "print(__import__('json').dumps([m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_package_root_reexports_lazily():
    import neuralcleanse

    assert set(neuralcleanse.__all__) == {*neuralcleanse._EXPORTS, "__version__"}
    assert set(neuralcleanse.__all__) <= set(dir(neuralcleanse))
    from neuralcleanse import ScanReport, Trigger, load_model  # noqa: F401

    assert all(getattr(neuralcleanse, name) is not None for name in neuralcleanse.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        neuralcleanse.nope  # noqa: B018


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["scan", "m.pt", "--data", "d.npz", "--out", "r", "--success-threshold", "99"],
            "--success-threshold must be a fraction in (0, 1], got 99",
        ),
        (
            ["mitigate", "m.pt", "--report", "s", "--data", "d", "--method", "filter", "--out", "r", "--fpr", "5"],
            "--fpr must be a fraction in (0, 1), got 5",
        ),
        (
            ["train", "--dataset", "mnist", "--arch", "mnist", "--out", "r", "--poison-rate", "10"],
            "--poison-rate must be a fraction in (0, 1), got 10",
        ),
        (
            ["train", "--dataset", "mnist", "--arch", "mnist", "--out", "r", "--epochs", "0"],
            "--epochs must be at least 1, got 0",
        ),
    ],
)
def test_flag_errors_name_the_flag(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"neuralcleanse: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_text_file_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes.pt").write_text("epoch 1: loss 0.31\nepoch 2: loss 0.12\n")
    assert main(["evaluate", str(tmp_path / "notes.pt"), "--data", "d.npz"]) == 1
    err = capsys.readouterr().err
    assert "notes.pt: a text file, not a model file of any known format" in err and "KeyError" not in err
