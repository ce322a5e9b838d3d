"""What every resumable run folder shares (teacher, student, learned vocoder): resume checks against the saved config,
the JSON-lines log, the loss plot and step milestones (docs/architecture.md, "Reliability")."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pdd.runtime import fileio
from pdd.runtime.errors import ConfigError
from pdd.runtime.plots import pyplot, save_figure
from pdd.runtime.untrusted import load_json
from pdd.training.checkpoint import CheckpointError


def write_json_atomic(path: Path, data: Any) -> None:
    fileio.write_json_atomic(path, data, indent=2)


def refuse_resume_with_force(resume: bool, force: bool) -> None:
    if resume and force:
        raise ConfigError("--resume and --force contradict each other: resume continues the run, force starts it over")


def resume_changes(
    out: Path, config: Any, given: dict[str, Any], may_change: frozenset[str], recorded: dict[str, tuple[Any, str]] | None = None
) -> dict[str, Any]:
    """The settings a resumed run may change and does; a ConfigError naming every other difference with the run's value.

    `recorded` holds settings kept outside the config (name → (given or None, the run's recorded string)).
    """
    changed = {k: v for k, v in given.items() if getattr(config, k) != v}
    refused = {k: getattr(config, k) for k in changed if k not in may_change}
    for name, (value, was) in (recorded or {}).items():
        if value is not None and str(value) != was:
            changed[name], refused[name] = value, was
    if refused:
        details = ", ".join(f"--{k.replace('_', '-')} {changed[k]!r} (run has {refused[k]!r})" for k in sorted(refused))
        raise ConfigError(f"cannot resume {out} with different settings: {details}; start a new run instead")
    return changed


def resumed_config(out: Path, checkpoint_name: str, run_name: str, section: str, config_type: Any, given: dict[str, Any],
                   may_change: frozenset[str]) -> Any:
    """The config a run folder saved under `section` of its run file, with the allowed changes in `given` applied; a
    CheckpointError when there is nothing to resume or the run file is not ours, a ConfigError naming refused changes.
    Shared by every resumable run (teacher, learned vocoder)."""
    run_file = out / run_name
    if not (out / checkpoint_name).is_file() or not run_file.is_file():
        raise CheckpointError(f"nothing to resume in {out}: it has no {checkpoint_name} and {run_name}")
    fileio.remove_stale_temps(out)  # temps of the killed run
    try:
        saved = load_json(run_file, "run file", CheckpointError)
        config = config_type.from_dict(saved[section])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{run_file} is not a pdd run file ({exc})") from None
    return dataclasses.replace(config, **resume_changes(out, config, given, may_change))


def keep_milestone(checkpoint: Path, milestone: Path) -> None:
    """Keep the checkpoint just written under a step name: a hard link (no extra disk), a copy where links fail."""
    milestone.parent.mkdir(parents=True, exist_ok=True)
    milestone.unlink(missing_ok=True)  # a resumed run rewrites the milestones of the steps it repeats
    try:
        os.link(checkpoint, milestone)
        fileio.note_written(milestone)  # the run's own file: --force may remove it
    except OSError:
        with fileio.AtomicFile(milestone, error=CheckpointError) as copy, open(checkpoint, "rb") as source:
            shutil.copyfileobj(source, copy.handle)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a run log (a torn last line from a killed process is skipped)."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_bytes().splitlines():  # bytes: a line of invalid UTF-8 is skipped like a torn one
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def append_log(path: Path, entry: dict[str, Any]) -> None:
    """One JSON line onto a run log, recorded in the folder's ledger (so --force may remove the log)."""
    fileio.append_line(path, json.dumps(entry))


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines after `step`: a resumed run rewrites the steps the killed one logged past its checkpoint."""
    entries = [e for e in read_log(path) if isinstance(e.get("step", 0), int) and e.get("step", 0) <= step]
    fileio.atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in entries))


def plot_loss(log_path: Path, png_path: Path) -> None:
    """Loss per logged step (log scale) with a smoothed curve, written atomically."""
    entries = [e for e in read_log(log_path) if "loss" in e and "event" not in e]
    if not entries:
        return
    plt = pyplot()
    steps = np.array([e["step"] for e in entries])
    loss = np.array([e["loss"] for e in entries])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, loss, lw=0.8, alpha=0.4, label="loss")
    width = len(loss) // 20
    if width > 1:
        smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
        ax.plot(steps[width - 1 :], smooth, lw=1.5, label=f"mean of {width}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("v-loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path)


@dataclasses.dataclass(frozen=True)
class RunKind:
    """What differs between the resumable runs (teacher, learned vocoder): the config type and the section of the run file
    it is saved under, the file names, what may change on resume, and which files are the run's own (what --force removes)."""

    config_type: Any
    section: str
    checkpoint_name: str
    run_name: str
    may_change: frozenset[str]
    own_files: Callable[[Path], list[Path]]
    data_hint: str  # the --data value a new run needs, for its error message


def prepare_resumable_run(kind: RunKind, out: str | os.PathLike[str], given: dict[str, Any], *, resume: bool,
                          force: bool) -> Any:
    """The config of the run in `out`: a new one from `given` (None values dropped), or (resume) the saved one with the
    allowed changes applied. A new run refuses a non-empty `out` unless `force`, which removes only the run's own files."""
    out = Path(out)
    given = {k: v for k, v in given.items() if v is not None}
    refuse_resume_with_force(resume, force)
    if resume:
        return resumed_config(out, kind.checkpoint_name, kind.run_name, kind.section, kind.config_type, given, kind.may_change)
    if "data" not in given:
        raise ConfigError(f"--data {kind.data_hint} is required for a new run")
    config = kind.config_type(**given)
    fileio.claim_output_folder(out, force=force, own_files=kind.own_files,
                               hint="pass --resume to continue that run or --force to start over")
    return config
