"""Every example command line in every pdd command's --help parses with that command's own parser; the engines the
runtime commands' examples name exist; and `pdd-run`'s examples run, on the tiny test bundle."""

from __future__ import annotations

import importlib
import shlex
from pathlib import Path
from typing import Iterator

import pytest
import typer

from typer._click.core import Command  # typer carries its own copy of click and builds its commands from it
from typer._click.exceptions import ClickException
from typer.core import TyperGroup as Group
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {  # as pyproject.toml's [project.scripts]
    "pdd-data": "pdd.training.cli_data",
    "pdd-train": "pdd.training.cli_train",
    "pdd-distill": "pdd.training.cli_distill",
    "pdd-eval": "pdd.training.cli_eval",
    "pdd-vocoder": "pdd.training.cli_vocoder",
    "pdd-prior": "pdd.training.cli_prior",
    "pdd-export": "pdd.export.cli",
    "pdd-run": "pdd.runtime.cli_run",
    "pdd-bench": "pdd.runtime.cli_bench",
    "pdd-serve": "pdd.runtime.cli_serve",
}
RUNTIME_COMMANDS = ("pdd-run", "pdd-bench", "pdd-serve")
# `torchrun … -m MODULE ARGS` is the module's command with ARGS
TORCHRUN_MODULES = {module: prog for prog, module in COMMANDS.items()}


def command(prog: str) -> Command:
    if prog not in RUNTIME_COMMANDS:
        pytest.importorskip("torch", reason=f"{prog} needs the [train]/[export] extras")
    if prog == "pdd-serve":
        pytest.importorskip("fastapi", reason="pdd-serve needs the [serve] extra")
    return typer.main.get_command(importlib.import_module(COMMANDS[prog]).app)


def helps(cmd: Command) -> Iterator[str]:
    yield cmd.help or ""
    if isinstance(cmd, Group):
        for sub in cmd.commands.values():
            yield from helps(sub)


def examples(prog: str) -> list[list[str]]:
    """The example lines of `prog`'s --help texts as argv lists (a trailing `# comment` removed)."""
    found = []
    for text in helps(command(prog)):
        for line in text.splitlines():
            if line.split()[:1] not in ([prog], ["torchrun"]):
                continue  # prose, whose apostrophes are no shell quotes
            words = shlex.split(line, comments=True)
            if words and words[0] == "torchrun" and "-m" in words:
                module = words[words.index("-m") + 1]
                words = [TORCHRUN_MODULES[module], *words[words.index("-m") + 2:]]
            if words and words[0] == prog:
                found.append(words)
    return found


def protected_args(ctx) -> list[str]:
    """A group's not-yet-parsed subcommand words (typer's click copy keeps them private)."""
    return list(getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", []))


def parse(cmd: Command, prog: str, args: list[str]) -> str:
    """Parse `args` as the command would (types, choices, unknown options; nothing runs); the full command name."""
    ctx = cmd.make_context(prog, list(args))
    name = prog
    while isinstance(cmd, Group) and [*protected_args(ctx), *ctx.args]:
        rest = [*protected_args(ctx), *ctx.args]
        sub_name, cmd, sub_args = cmd.resolve_command(ctx, rest)
        name += f" {sub_name}"
        ctx = cmd.make_context(sub_name, sub_args, parent=ctx)  # type: ignore[union-attr]
    return name


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_every_help_example_parses(prog: str) -> None:
    cmd = command(prog)
    lines = examples(prog)
    assert lines, f"{prog} --help has no example command line"
    for words in lines:
        try:
            parse(cmd, prog, words[1:])
        except ClickException as exc:
            pytest.fail(f"{shlex.join(words)}: {exc.format_message()}")


@pytest.mark.parametrize("prog", RUNTIME_COMMANDS)
def test_runtime_examples_name_engines_that_exist(prog: str) -> None:
    for words in examples(prog):
        if "--engine" in words:
            engine = words[words.index("--engine") + 1]
            assert (REPO / engine / "manifest.json").is_file(), f"{shlex.join(words)}: no engine {engine}"


def test_pdd_run_examples_run_on_the_tiny_bundle(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """Each example as written, but on the tiny bundle and into a temporary folder (what it writes is pdd-run's own
    business; here: exit 0 and no error line)."""
    from pdd.runtime.cli_run import app

    lines = examples("pdd-run")
    for index, words in enumerate(lines):
        args = words[1:]
        if "--engine" in args:
            args[args.index("--engine") + 1] = str(tiny_bundle_dir)
        else:
            args = ["--engine", str(tiny_bundle_dir), *args]
        out = tmp_path / f"example-{index}"
        if "--out" in args:
            args[args.index("--out") + 1] = str(out)
        else:
            args += ["--out", str(out)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"{shlex.join(words)}: {result.output}"


@pytest.mark.parametrize("prog", ["pdd-run", "pdd-bench"])
def test_choices_are_all_named_in_the_help(prog: str) -> None:
    from pdd.runtime.backends import BACKENDS, DEVICES
    from pdd.runtime.sampler import AUTO, MODES, VOCODERS

    modes = (*MODES, AUTO) if prog == "pdd-run" else MODES  # pdd-bench measures the two modes by name
    options = {param.name: param for param in command(prog).params}
    for name, choices in (("vocoder", VOCODERS), ("mode", modes), ("backend", BACKENDS), ("device", DEVICES)):
        words = set((getattr(options[name], "help", None) or "").replace("|", " ").replace("(", " ").split())
        missing = [choice for choice in choices if choice not in words]
        assert not missing, f"{prog} --{name} help lacks {missing}"
