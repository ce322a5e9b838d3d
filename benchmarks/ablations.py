"""The ablations (docs/ablations.md): what each teacher variant costs, how many steps give each the same CPU time, and
the table from the `pdd-eval` results. benchmarks/ablations.sh runs the whole recipe; this script is its three helpers.

    python benchmarks/ablations.py cost                                   # params and FLOPs per forward of every variant
    python benchmarks/ablations.py steps --minutes 120 --threads 2 --out budget.json   # equal CPU time → steps per variant
    python benchmarks/ablations.py table --budget budget.json --row "1D snake=EVAL_DIR#teacher DDIM@64" … --out docs/ablations.md

Equal budget means equal CPU time, reached by fixed step counts: each variant's training step (batch, forward + backward +
AdamW) is timed on this machine after a warm-up, and steps = minutes · 60 / (seconds per step). Fixed steps, not a wall-clock
stop, so that each run's cosine schedule ends where it was planned and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

# The teacher variants: name → pdd-train flags (the recipe passes the same). "base" is the shipped teacher's recipe.
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "reshape": ["--pack", "reshape"],
    "no-pack": ["--pack", "none"],
    "unet2d": ["--arch", "unet2d"],
    "min-snr": ["--weighting", "min-snr", "--min-snr-gamma", "5"],
    "top-192": ["--top-width", "192"],
    "lr-2e-4": ["--lr", "2e-4"],
    "batch-32": ["--batch-size", "32"],
}
BASE_FLAGS = {"lr": 4e-4, "batch_size": 16}  # as engines/recipes/small-piano.sh
TABLE_START, TABLE_END = "<!-- ablation table: benchmarks/ablations.py table -->", "<!-- end of ablation table -->"
METRICS = ("fd_bp", "fd_mel", "flux_mean", "silent_fraction", "band_std", "sample_s_per_clip")


def variant_settings(name: str) -> dict[str, Any]:
    """TrainConfig fields of a variant (its flags parsed the simple way: --name value pairs)."""
    flags, settings = VARIANTS[name], dict(BASE_FLAGS, arch="unet1d", pack="snake", top_width=0, weighting="snr+1")
    for key, value in zip(flags[::2], flags[1::2]):
        field = key.lstrip("-").replace("-", "_")
        settings[field] = type(settings.get(field, ""))(value) if field in settings else value
    if settings["arch"] == "unet2d":
        settings["pack"] = "none"
    return settings


def build(name: str, preset: str = "small") -> tuple[Any, Any]:
    from pdd.runtime.config import get_preset
    from pdd.training.models import build_denoiser, model_config

    s = variant_settings(name)
    audio = get_preset("paper").with_pack_mode(s["pack"])
    return build_denoiser(model_config(s["arch"], preset, audio, top_channels=s["top_width"])), audio


def cmd_cost(args: argparse.Namespace) -> dict[str, Any]:
    from pdd.training.flops import model_cost

    result = {}
    for name in VARIANTS:
        model, audio = build(name, args.preset)
        cost = model_cost(model, audio)
        result[name] = {"parameters": cost.parameters, "gflop_per_forward": round(cost.flops_per_clip / 1e9, 4)}
        print(f"{name:10s} {cost.describe()}")
    return result


def seconds_per_step(name: str, batch: int, repeats: int, preset: str) -> float:
    """Median wall time of one training step (forward, backward, AdamW) of a variant at `batch` clips."""
    import torch

    from pdd.training.diffusion import v_loss

    model, audio = build(name, preset)
    s = variant_settings(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.rand(batch, *audio.packed_shape) * 2 - 1
    times = []
    for index in range(repeats + 2):  # two warm-up steps
        started = time.perf_counter()
        loss = v_loss(model, x0, torch.rand(batch), torch.randn_like(x0), s["weighting"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index >= 2:
            times.append(time.perf_counter() - started)
    return float(sorted(times)[len(times) // 2])


def cmd_steps(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {}
    timed: dict[tuple, float] = {}  # variants with the same network and batch share one timing (so one step count)
    for name in args.variants or list(VARIANTS):
        s = variant_settings(name)
        batch = int(s["batch_size"])
        key = (s["arch"], s["pack"], s["top_width"], batch)
        if key not in timed:
            timed[key] = seconds_per_step(name, batch, args.repeats, args.preset)
        seconds = timed[key]
        steps = max(int(args.minutes * 60 / seconds), 1)
        result[name] = {"seconds_per_step": round(seconds, 4), "steps": steps, "batch_size": batch,
                        "minutes": args.minutes, "threads": args.threads}
        print(f"{name:10s} {seconds:.3f} s/step at batch {batch} → {steps} steps in {args.minutes} min", flush=True)
    return result


def run_finished(run: Path) -> bool:
    """True when RUN's checkpoint is at the step count its run.json plans (so the recipe neither retrains nor fails)."""
    from pdd.training.checkpoint import read_info

    try:
        planned = json.loads((run / "run.json").read_text())["train"]["steps"]
        return read_info(run / "checkpoint.pt").train_step >= planned
    except (OSError, ValueError, KeyError, Exception):  # noqa: BLE001 — anything unreadable means "not finished"
        return False


# -- the table ------------------------------------------------------------------------------------------------------------

def fail(message: str) -> NoReturn:
    """One `error:` line on stderr and exit status 2 (the house rule for bad input)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_row(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """"LABEL=EVAL_DIR#ROW NAME" → (label, that row of EVAL_DIR/table.json, the table's "real vs real" row)."""
    label, _, where = spec.partition("=")
    folder, _, row_name = where.partition("#")
    if not label or not folder or not row_name:
        fail(f"--row {spec!r}: expected LABEL=EVAL_DIR#ROW NAME")
    path = Path(folder) / "table.json"
    try:
        rows = {r["name"]: r for r in json.loads(path.read_text())["rows"]}
    except (OSError, ValueError, KeyError) as exc:
        fail(f"{path}: not a pdd-eval table ({exc})")
    if row_name not in rows or "real vs real" not in rows:
        fail(f"{path} has no row {row_name!r} (rows: {', '.join(rows)})")
    return label, rows[row_name], rows["real vs real"]


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _vs_real(value: Any, real: Any) -> str:
    return "—" if value is None or not real else f"{value:.3g} ({value / real:.2f}×)"


def table_markdown(rows: list[tuple[str, dict[str, Any], dict[str, Any]]], budget: dict[str, Any], cost: dict[str, Any],
                   measured: bool) -> str:
    header = ("| row | CPU budget | params | GFLOP/fwd | FD-BP ↓ | FD-mel ↓ | flux dB (× real) | silent fraction (× real) "
              "| band std (× real) | sampling s/clip |")
    lines = [header, "|" + "---|" * 10]
    for label, row, real in rows:
        variant = label.split(" ")[0]
        b, c = budget.get(variant, {}), cost.get(variant, {})
        spent = f"{b['minutes']} min ({b['steps']} steps)" if b else "—"
        params = f"{c['parameters'] / 1e6:.2f} M" if c else "—"
        lines.append(f"| {label} | {spent} | {params} | {_fmt(c.get('gflop_per_forward'))} | {_fmt(row.get('fd_bp'))} | "
                     f"{_fmt(row.get('fd_mel'))} | {_vs_real(row.get('flux_mean'), real.get('flux_mean'))} | "
                     f"{_vs_real(row.get('silent_fraction'), real.get('silent_fraction'))} | "
                     f"{_vs_real(row.get('band_std'), real.get('band_std'))} | {_fmt(row.get('sample_s_per_clip'))} |")
    if not measured:
        lines.insert(0, "**Not measured yet: every number below is a placeholder from a smoke run, not a result.**\n")
    return "\n".join(lines) + "\n"


def plot_rows(path: Path, rows: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    from pdd.runtime.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.5), dpi=100)
    labels = [label for label, _, _ in rows]
    for ax, metric, title in ((axes[0], "fd_bp", "FD-BP ↓"), (axes[1], "fd_mel", "FD-mel ↓")):
        ax.barh(labels, [row.get(metric) or 0.0 for _, row, _ in rows])
        ax.set_title(title)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    fig.tight_layout()
    save_figure(fig, path)


def ranking(rows: list[tuple[str, dict[str, Any], dict[str, Any]]], metric: str) -> list[str]:
    return [label for label, row, _ in sorted(rows, key=lambda r: (r[1].get(metric) is None, r[1].get(metric) or 0.0))]


def stability_line(rows: list[tuple[str, dict[str, Any], dict[str, Any]]], specs: list[str], swap: tuple[str, str],
                   metric: str) -> str:
    """Whether the rows rank the same by `metric` when every eval folder name has swap[0] replaced by swap[1] (another
    evaluation seed: other noise, other held-out split) — how K is shown to be large enough."""
    other = [read_row(spec.replace(swap[0], swap[1])) for spec in specs]
    first, second = ranking(rows, metric), ranking(other, metric)
    verdict = "the same" if first == second else "different: " + " < ".join(second)
    return f"- Ordering by {metric} with the second evaluation seed ({swap[1]!r} folders): {verdict}.\n"


def cmd_table(args: argparse.Namespace) -> str:
    rows = [read_row(spec) for spec in args.row]
    budget = json.loads(Path(args.budget).read_text()) if args.budget else {}
    cost = json.loads(Path(args.cost).read_text()) if args.cost else {}
    text = table_markdown(rows, budget, cost, measured=not args.smoke)
    if args.check_seed:
        metric = "fd_bp" if all(row.get("fd_bp") is not None for _, row, _ in rows) else "fd_mel"
        text += "\n" + stability_line(rows, args.row, tuple(args.check_seed.split(":", 1)), metric)
    out = Path(args.out)
    existing = out.read_text() if out.is_file() else None
    if existing is not None and TABLE_START in existing and TABLE_END in existing:
        # docs/ablations.md: only the marked table section is replaced; the prose around it is the authors'.
        head, rest = existing.split(TABLE_START, 1)
        text = head + TABLE_START + "\n" + text + rest[rest.index(TABLE_END):]
    elif existing is not None and not args.force:
        fail(f"{out} exists and has no {TABLE_START} section; pass --force to replace it")
    out.write_text(text)
    plot_rows(out.with_suffix(".png"), rows)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cost = sub.add_parser("cost", help="params and FLOPs per forward of every variant (paper preset)")
    cost.add_argument("--preset", default="small")
    cost.add_argument("--out", default=None, help="also write them as JSON here")
    steps = sub.add_parser("steps", help="time a training step of each variant; steps for an equal CPU budget")
    steps.add_argument("--minutes", type=float, required=True)
    steps.add_argument("--threads", type=int, default=2)
    steps.add_argument("--repeats", type=int, default=5)
    steps.add_argument("--preset", default="small")
    steps.add_argument("--variants", nargs="*", choices=list(VARIANTS))
    steps.add_argument("--out", default=None, help="also write the budget as JSON here")
    table = sub.add_parser("table", help="the ablation table (Markdown + PNG) from pdd-eval results")
    table.add_argument("--row", action="append", required=True, help='"LABEL=EVAL_DIR#ROW NAME"; LABEL starts with the variant')
    table.add_argument("--budget", default=None, help="JSON from `steps --out`")
    table.add_argument("--cost", default=None, help="JSON from `cost --out`")
    table.add_argument("--out", required=True)
    table.add_argument("--force", action="store_true")
    table.add_argument("--smoke", action="store_true", help="mark the table as not measured (tests, dry runs)")
    table.add_argument("--check-seed", default=None, help='"-s0:-s1": rank again from the folders of another eval seed')
    finished = sub.add_parser("finished", help="exit 0 when the pdd-train run in RUN reached its planned steps")
    finished.add_argument("run")
    args = parser.parse_args(argv)
    if args.command == "table":
        cmd_table(args)
        return
    if args.command == "finished":
        sys.exit(0 if run_finished(Path(args.run)) else 1)
    result = cmd_cost(args) if args.command == "cost" else cmd_steps(args)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
