"""Every code block of the README is run as printed.

The blocks are of five kinds, each with its runner: ``make`` lines (dry-run: the targets exist), the install
lines (they need a package index, so they are checked for what they name, not run), ``neuralcleanse`` command
lines and a ``$ neuralcleanse`` transcript (parsed here; run on real MNIST under the ``slow`` marker, with the
transcript's output compared line by line in form), and the Python example (run on real MNIST under ``slow``,
after the commands that make its model). A new kind of block fails :func:`test_every_block_has_a_runner` until
it gets one. The slow ones skip, saying why, where the shared MNIST copy is absent.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from neuralcleanse.cli import _glue_dash_values, build_parser, main
from neuralcleanse.cli.parser import check_values

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    """``(kind, code)`` of every fenced block, in order."""
    out = []
    for lang, code in _FENCE.findall(README.read_text(encoding="utf-8")):
        if code.startswith("$ "):  # a command and its output: only the command is a command line
            out.append(("transcript", code))
            continue
        lines = _lines(code)
        if lang == "python":
            kind = "python"
        elif lines and all(line.startswith("make ") for line in lines):
            kind = "make"
        elif lines and all(line.startswith(("pip install ", "python -m build")) for line in lines):
            kind = "install"
        elif lines and all(line.startswith("neuralcleanse ") for line in lines):
            kind = "commands"
        else:
            kind = f"unknown ({lang or 'no language'})"
        out.append((kind, code))
    return out


def _lines(code: str) -> list[str]:
    """The block's lines without comments (``#`` outside quotes) or blank lines; ``\\`` continuations joined."""
    joined = code.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True) if not line.startswith(("$ ", " ")) else None
        if words is None:
            out.append(line)
        elif words:
            out.append(shlex.join(words))
    return [line for line in out if line.strip()]


def _commands() -> list[list[str]]:
    """The argv (after ``neuralcleanse``) of every command line of the command blocks and transcripts."""
    argvs = []
    for kind, code in blocks():
        if kind == "commands":
            argvs += [shlex.split(line)[1:] for line in _lines(code)]
        elif kind == "transcript":
            argvs += [shlex.split(line[2:])[1:] for line in code.splitlines() if line.startswith("$ ")]
    return argvs


def test_every_block_has_a_runner():
    kinds = [kind for kind, _ in blocks()]
    assert not [k for k in kinds if k.startswith("unknown")], kinds
    assert {"python", "commands", "transcript", "make", "install"} <= set(kinds)


def test_make_targets_exist():
    for kind, code in blocks():
        if kind == "make":
            for line in _lines(code):
                done = subprocess.run(
                    ["make", "-n", "-C", str(ROOT), *shlex.split(line)[1:]], capture_output=True, text=True
                )
                assert done.returncode == 0, f"{line}: {done.stderr}"


def test_install_lines_name_the_pinned_torch_and_the_extras():
    pyproject = (ROOT / "pyproject.toml").read_text()
    (code,) = [code for kind, code in blocks() if kind == "install"]
    for pin in re.findall(r"torch==[\d.]+", code):
        assert f'"{pin}"' in pyproject, f"the README installs {pin}, pyproject.toml pins another"
    for requirement in re.findall(r"'([a-z0-9_-]+>=[\d.]+)'", code):
        assert f'"{requirement}"' in pyproject, f"{requirement} is not the formats extra's"


def test_every_command_parses():
    parser = build_parser()
    assert _commands()
    for argv in _commands():
        args = parser.parse_args(_glue_dash_values(argv))
        check_values(args)


@pytest.mark.slow
@pytest.mark.usefixtures("mnist_dir")  # "mnist" by name reads the shared copy; without it the test skips
def test_the_session_and_the_python_example_run_as_printed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for kind, code in blocks():
        if kind == "commands":
            for line in _lines(code):
                assert main([*shlex.split(line)[1:], "-q"]) == 0, line
    (code,) = [code for kind, code in blocks() if kind == "python"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("True [7] ") and lines[1].startswith("(1, 28, 28) (1, 28, 28) ")


@pytest.mark.slow
@pytest.mark.usefixtures("mnist_dir")
def test_the_demo_transcript_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (code,) = [code for kind, code in blocks() if kind == "transcript"]
    command, *expected = code.splitlines()
    assert main(shlex.split(command[2:])[1:]) == 0
    got = [
        line
        for line in capsys.readouterr().out.splitlines()
        if not re.match(
            r"mnist-\w+: (training|reusing|"
            r"scanning)",
            line,
        )
    ]

    def shape(line: str) -> str:  # the line with its figures and paths blanked out
        return re.sub(r"\d+(\.\d+)?%?|runs/\S+|\[\d[\d, ]*\]", "#", line)

    assert [shape(line) for line in got] == [shape(line) for line in expected]
    assert any(line.startswith("INFECTED: flagged labels [7] (k-aware-ratio score ") for line in got)
