"""What pdd-eval writes: the Markdown/JSON table, the student-vs-teacher comparisons, the plots and the WAVs, into an
output folder it owns (only its own files are replaced under --force)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime.audio import write_audio
from pdd.runtime import fileio
from pdd.runtime.fileio import claim_output_folder
from pdd.runtime.plots import pyplot, save_figure
from pdd.training.structure import LABELS, METRICS


OUTPUT_FILES = ("table.md", "table.json", "metrics_vs_steps.png", "spectrograms.png")
WAV_DIR = "wavs"


@dataclass
class Row:
    """One line of the table."""

    name: str
    kind: str  # "teacher", "student", "reference", "generated"
    steps: int | None
    clips: int
    fd_bp: float | None = None
    fd_mel: float | None = None
    flux_mean: float | None = None
    flux_std: float | None = None
    fidelity_db: float | None = None
    sample_s_per_clip: float | None = None
    vocoder_s_per_clip: float | None = None
    silent_fraction: float | None = None  # the "busy and flat" statistics (metrics.py), on the row's re-analysed audio
    band_std: float | None = None
    kad: float | None = None  # unbiased MMD² on the FD-BP embeddings (metrics.kad)
    structure: dict[str, float | None] | None = None  # structure.METRICS of the row's transcribed audio
    structure_x_real: dict[str, float | None] | None = None  # the same, each as × the reference set's

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- the table --------------------------------------------------------------------------------------------------------------

def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9@]+", "-", name.lower()).strip("-").replace("@", "-at-")


def _evaluation_files(out: Path) -> list[Path]:
    return [out / name for name in OUTPUT_FILES] + sorted((out / WAV_DIR).glob("*/*.wav"))


def prepare_out(out: Path, force: bool) -> None:
    """Refuse a folder that holds files unless `force`, which removes only what an evaluation writes."""
    claim_output_folder(out, force=force, own_files=_evaluation_files, hint="pass --force to replace the evaluation there")
    wav_dir = out / WAV_DIR
    if wav_dir.is_dir():  # row folders emptied by --force go too
        for sub in wav_dir.iterdir():
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
    out.mkdir(parents=True, exist_ok=True)


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"


def structure_cell(value: float | None, ratio: float | None) -> str:
    """'value (ratio×)', or the value alone when there is no ratio."""
    return fmt(value) if ratio is None else f"{fmt(value)} ({fmt(ratio, 2)}×)"


STRUCTURE_NOTE = ("structure: notes transcribed by Basic Pitch, each metric averaged over clips (whole recordings cut into "
                  "clip-length windows) and given as × the reference set; the real rows are the floor — how far apart two "
                  "sets of real music already are")


def structure_table(rows: list[Row]) -> list[str]:
    """The structure metrics of every row that has them, as a second Markdown table (empty without Basic Pitch)."""
    scored = [r for r in rows if r.structure is not None]
    if not scored:
        return []
    lines = ["", "| row | " + " | ".join(LABELS[m] for m in METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for r in scored:
        ratios = r.structure_x_real or {}
        lines.append(f"| {r.name} | " + " | ".join(structure_cell(r.structure.get(m), ratios.get(m)) for m in METRICS)
                     + " |")
    return lines


def markdown_table(rows: list[Row], notes: list[str], title: str) -> str:
    header = ("| row | N | FD-BP ↓ | KAD ↓ | FD-mel ↓ | flux mean (dB) | flux std (dB) | fidelity vs teacher (dB MAE) ↓ "
              "| sampling s/clip | Griffin-Lim s/clip |")
    lines = [f"# {title}", "", header, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r.name} | {r.steps if r.steps is not None else '—'} | {fmt(r.fd_bp)} | {fmt(r.kad, 4)} | "
                     f"{fmt(r.fd_mel)} | {fmt(r.flux_mean)} | {fmt(r.flux_std)} | {fmt(r.fidelity_db)} | "
                     f"{fmt(r.sample_s_per_clip, 4)} | {fmt(r.vocoder_s_per_clip, 4)} |")
    lines.extend(structure_table(rows))
    lines.append("")
    lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    fileio.atomic_write_text(path, text)  # the one atomic writer: records the file in the folder's ledger


def write_tables(out: Path, rows: list[Row], notes: list[str], title: str, extra: dict[str, Any]) -> None:
    write_text_atomic(out / "table.md", markdown_table(rows, notes, title))
    payload = {"format": "pdd-eval/1", "title": title, "rows": [r.to_dict() for r in rows], "notes": notes, **extra}
    write_text_atomic(out / "table.json", json.dumps(payload, indent=2) + "\n")


def comparisons(rows: list[Row], reference_steps: int) -> list[dict[str, Any]]:
    """For every N with both rows, the claim the table exists to test: does student@N beat teacher DDIM@N, and how close
    does it come to the teacher at `reference_steps` (the slow sampler it was distilled from)?

    Per metric (FD-BP, FD-mel: lower is better; fidelity: dB MAE to the reference, lower is better) the entry holds both
    values, the reference row's value, `student_better_<m>` and, for the distances, `student_closer_to_reference_<m>`
    (|student − reference| < |teacher@N − reference|): a student that reproduces a flawed teacher faithfully is "worse"
    than a blurrier few-step teacher on an FD that happens to prefer blur, but it is closer to what it was trained to be.
    """
    teacher = {r.steps: r for r in rows if r.kind == "teacher"}
    reference = teacher.get(reference_steps)
    result = []
    for r in rows:
        if r.kind == "student" and r.steps in teacher:
            t = teacher[r.steps]
            entry: dict[str, Any] = {"steps": r.steps}
            for metric in ("fd_bp", "fd_mel", "fidelity_db"):
                a, b = getattr(r, metric), getattr(t, metric)
                ref = getattr(reference, metric) if reference is not None else None
                entry[f"student_{metric}"], entry[f"teacher_{metric}"], entry[f"reference_{metric}"] = a, b, ref
                entry[f"student_better_{metric}"] = None if a is None or b is None else bool(a < b)
                if metric != "fidelity_db":
                    entry[f"student_closer_to_reference_{metric}"] = (
                        None if a is None or b is None or ref is None else bool(abs(a - ref) < abs(b - ref)))
            result.append(entry)
    return result


def comparison_line(entry: dict[str, Any], reference_steps: int) -> str:
    """One line for people: student@N vs teacher DDIM@N (and teacher@reference) on every metric."""
    parts = []
    for metric, label, unit in (("fd_bp", "FD-BP", ""), ("fd_mel", "FD-mel", ""), ("fidelity_db", "fidelity", " dB")):
        a, b = entry[f"student_{metric}"], entry[f"teacher_{metric}"]
        if a is None or b is None:
            continue
        ref = entry.get(f"reference_{metric}")
        ref_text = f" (teacher@{reference_steps} {fmt(ref)})" if ref is not None and metric != "fidelity_db" else ""
        parts.append(f"{label} {fmt(a)} vs {fmt(b)}{unit}{ref_text}")
    return f"student@{entry['steps']} vs teacher DDIM@{entry['steps']}: " + "; ".join(parts)


# -- plots --------------------------------------------------------------------------------------------------------------------

def plot_metrics(path: Path, rows: list[Row]) -> None:
    """Metric vs N (log axis), teacher vs student, with the reference rows as horizontal lines."""
    plt = pyplot()
    metrics = [("fd_bp", "FD-BP"), ("fd_mel", "FD-mel (dB²)"), ("flux_mean", "spectral flux mean (dB)"),
               ("fidelity_db", "fidelity vs teacher@ref (dB MAE)")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=100)
    for ax, (key, label) in zip(axes.ravel(), metrics):
        for kind, style in (("teacher", "o-"), ("student", "s-")):
            points = [(r.steps, getattr(r, key)) for r in rows if r.kind == kind and getattr(r, key) is not None]
            if points:
                xs, ys = zip(*sorted(points))
                ax.plot(xs, ys, style, label="teacher DDIM" if kind == "teacher" else "student")
        for r, color in zip([r for r in rows if r.kind == "reference"], ("tab:green", "tab:gray")):
            if getattr(r, key) is not None:
                ax.axhline(getattr(r, key), ls="--", color=color, label=r.name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps N")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_spectrogram_grid(path: Path, named_mels: list[tuple[str, np.ndarray]], columns: int = 4) -> None:
    """One row per table row, the first `columns` clips side by side (normalised log-mels, shared colour scale)."""
    plt = pyplot()
    columns = max(1, min(columns, min(m.shape[0] for _, m in named_mels)))
    fig, axes = plt.subplots(len(named_mels), columns, figsize=(2.6 * columns, 1.25 * len(named_mels) + 0.4), dpi=100,
                             squeeze=False)
    for row, (name, mels) in enumerate(named_mels):
        for col in range(columns):
            ax = axes[row, col]
            ax.imshow(mels[col], origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    save_figure(fig, path)


def write_wavs(out: Path, name: str, waves: np.ndarray | list[np.ndarray], sample_rate: int) -> None:
    folder = out / WAV_DIR / slug(name)
    folder.mkdir(parents=True, exist_ok=True)
    for k, wave in enumerate(waves):
        write_audio(folder / f"clip-{k:02d}.wav", np.asarray(wave), sample_rate, overwrite=True)
