"""Progressive distillation (Salimans & Ho 2022, Algorithm 2): halve a sampler's step count round by round
(docs/architecture.md, "Diffusion math").

Round N (N = from_steps/2, from_steps/4, …, to_steps) trains a student that samples in N DDIM steps to land, in one step
t → t − 1/N, where its teacher lands in two steps t → t − 0.5/N → t − 1/N. The student starts as a copy of the teacher; the
finished student is saved as `student-N` and becomes the next round's teacher.

Per training example: x from the training split, t = i/N on the student's grid (i uniform in 1..N), z_t = α_t x + σ_t ε;
the teacher's two DDIM steps give z_t″; the target x̃ (`pdd.runtime.schedule.distill_target`) is the x̂ that makes one DDIM
step from z_t land exactly on z_t″ (at the final interval, t″ = 0, it is the teacher's x̂ itself). The loss is
w(t)·‖x̂_θ(z_t) − x̃‖² with w = max(SNR, 1) ("truncated", the paper's default) or SNR + 1 (≡ v-MSE). Adam with the learning
rate annealed linearly to zero within each round; no EMA unless asked. All schedule arithmetic is `pdd.runtime.schedule`.

Step budget: the paper uses ~50k updates per round at batch 128 on accelerators (CIFAR-10; more for larger data sets); our
default (`DistillConfig.steps_per_round`) is sized so all rounds 1024 → 8 of the CPU `small` preset finish in well under an
hour on 2 cores. Scale it up on a GPU.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdd.runtime.errors import ConfigError
from pdd.runtime import fileio
from pdd.runtime.fileio import claim_output_folder
from pdd.runtime.untrusted import load_json
from pdd.runtime.schedule import (ScheduleConfig)
from pdd.training.cache import open_cache
from pdd.training.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    denoiser_from_state,
    load_checkpoint,
    load_denoiser,
    make_checkpoint_state,
    read_info,
    save_checkpoint,
)
from pdd.runtime.conditioning import ConditionConfig
from pdd.training.cond_data import ConditionedDataset
from pdd.training.data import MelDataset
from pdd.training.distill_round import DistillConfig, frozen, new_student, one_step_error, round_optimizer, train_steps
from pdd.training.ema import EMA
from pdd.training.device import Dist, resolve_device
from pdd.training.repro import BatchPlan, step_seed
from pdd.training.runfolder import append_log, plot_loss, refuse_resume_with_force, resume_changes, truncate_log, write_json_atomic
from pdd.training.optim import NonFiniteLoss
from pdd.training.unet1d import count_parameters

# -- a distillation run: rounds, checkpoints, resume ----------------------------------------------------------------------
#
# DRUN/distill.json      format, settings, teacher file, data cache, rounds (written when the run starts)
# DRUN/student-N.pt      the finished student of round N (kind "student", steps N, lineage, schedule): the next round's teacher
# DRUN/progress.pt       the round in progress (student, optimiser, scheduler, EMA, step): what --resume continues
# DRUN/log.jsonl         one line per logged step (round, step, loss, lr, it/s) and per event; loss.png its plot

DISTILL_FORMAT = "pdd-distill/1"
RUN_FILE = "distill.json"
PROGRESS_FILE = "progress.pt"
LOG_FILE = "log.jsonl"
LOSS_PNG = "loss.png"
LOG_EVERY = 10
# Settings a resumed run may change: they do not change what is learned.
RESUME_MAY_CHANGE = frozenset({"checkpoint_every"})


def student_file(out: str | os.PathLike[str], steps: int) -> Path:
    return Path(out) / f"student-{steps}.pt"


def find_students(folder: str | os.PathLike[str]) -> dict[int, Path]:
    """{steps: path} of the finished students `student-N.pt` in a distillation folder."""
    found = {}
    for path in Path(folder).glob("student-*.pt"):
        suffix = path.stem.split("-", 1)[1]
        if suffix.isdigit():
            found[int(suffix)] = path
    return dict(sorted(found.items(), reverse=True))


def _our_files(out: Path) -> list[Path]:
    files = [out / RUN_FILE, out / PROGRESS_FILE, out / LOG_FILE, out / LOSS_PNG]
    return files + list(find_students(out).values())


@dataclass
class DistillResult:
    students: dict[int, Path]
    log: Path
    rounds: list[dict[str, Any]]


def _data_from_lineage(info: CheckpointInfo) -> str | None:
    for entry in reversed(info.lineage):
        if entry.get("data"):
            return str(entry["data"])
    return None


def prepare_distill_run(out: str | os.PathLike[str], teacher: str | os.PathLike[str] | None, data: str | None,
                        given: dict[str, Any], *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """The run record of `out`: a new one (teacher, data, settings) or, with `resume`, the saved one.

    A new run refuses a non-empty folder unless `force`, which removes only the files a distillation run writes.
    """
    out = Path(out)
    given = {k: v for k, v in given.items() if v is not None}
    refuse_resume_with_force(resume, force)
    if resume:
        run_file = out / RUN_FILE
        if not run_file.is_file():
            raise CheckpointError(f"nothing to resume in {out}: it has no {RUN_FILE}")
        fileio.remove_stale_temps(out)  # temps of the killed run
        try:
            record = load_json(run_file, "distillation record", CheckpointError)
            config = DistillConfig.from_dict(record["settings"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{run_file} is not a pdd distillation record ({exc})") from None
        recorded = {"teacher": (teacher, record["teacher"]), "data": (data, record["data"])}
        changed = resume_changes(out, config, given, RESUME_MAY_CHANGE, recorded)
        record["settings"] = dataclasses.replace(config, **changed).to_dict()
        return record

    if teacher is None:
        raise ConfigError("--teacher CHECKPOINT is required for a new distillation run")
    config = DistillConfig(**given)
    claim_output_folder(out, force=force, own_files=_our_files,
                        hint="pass --resume to continue that run or --force to start over")
    info = read_info(teacher)
    if info.kind == "student" and info.steps != config.from_steps:
        raise ConfigError(f"{teacher} is a {info.steps}-step student; distil it with --from-steps {info.steps}")
    data = data if data is not None else _data_from_lineage(info)
    if data is None:
        raise ConfigError(f"{teacher} does not record its training data; pass --data CACHE")
    return {"format": DISTILL_FORMAT, "teacher": str(teacher), "data": str(data), "settings": config.to_dict(),
            "rounds": config.rounds(), "audio": info.audio.to_dict(), "model": info.model.to_dict()}


class _RoundProgress:
    """rich progress over all rounds (round, loss, it/s, ETA); a no-op when disabled."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]distil {task.fields[round]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} it/s"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(),
        )
        self.progress.start()
        self.task = self.progress.add_task("distil", total=total, completed=done, round="…", loss="…", rate="…")

    def update(self, done: int, round_label: str, loss: float, rate: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, round=round_label, loss=f"{loss:.4f}", rate=f"{rate:.2f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def distill(record: dict[str, Any], out: str | os.PathLike[str], *, resume: bool = False, device: str = "auto",
            threads: int | None = None, progress: bool = True, console_print: bool = True,
            stop_after: int | None = None) -> DistillResult:
    """Run (or continue) every round of the distillation described by `record` (see `prepare_distill_run`) in `out`.

    `stop_after` (tests) stops the run after that many optimiser steps in total, as a kill would, after any checkpoint due.
    """
    out = Path(out)
    config = DistillConfig.from_dict(record["settings"])
    device_name = resolve_device(device)
    torch_device = torch.device(device_name)
    if threads is not None:
        torch.set_num_threads(threads)

    teacher_path = Path(record["teacher"])
    teacher_state = load_checkpoint(teacher_path)  # read once: the model and, for a conditioned teacher, its condition
    teacher, teacher_info = denoiser_from_state(teacher_state, teacher_path, torch_device)
    teacher_lineage = teacher_info.lineage  # the current round's teacher's (it moves on with every round)
    cache = open_cache(record["data"])
    if not teacher_info.audio.same_front_end(cache.config):  # packing aside: the data set packs as the teacher did
        raise ConfigError(f"{record['data']} holds audio preset {cache.config.name!r} but the teacher was trained on "
                          f"{teacher_info.audio.name!r}; pass the teacher's own cache with --data")
    condition = teacher_condition(teacher_path, teacher_state, teacher_info)
    dataset: MelDataset = MelDataset(cache, split="train", random_shift=True, audio=teacher_info.audio)
    if condition is not None:
        dataset = ConditionedDataset(cache, condition, split="train", random_shift=True, audio=teacher_info.audio)
    if len(dataset) == 0:
        raise ConfigError(f"{record['data']} has no training clips")
    plan = BatchPlan(len(dataset), config.batch_size, Dist(), config.seed)
    # Fixed clips (no random shift) on which every round logs the student's one-step error before and after.
    unshifted = MelDataset(cache, split="train", random_shift=False, audio=teacher_info.audio)
    probe = torch.stack([unshifted[i] for i in range(min(4, len(unshifted)))]).to(torch_device)

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_FILE, record)
    log_path = out / LOG_FILE
    rounds = config.rounds()
    total_steps = len(rounds) * config.steps_per_round

    def log_line(entry: dict[str, Any]) -> None:
        append_log(log_path, entry)

    # Where to start: finished rounds are skipped (their student becomes the teacher); a round in progress continues.
    start_round, start_step, resume_state = 0, 0, None
    if resume:
        students = find_students(out)
        while start_round < len(rounds) and rounds[start_round] in students:
            start_round += 1
        if start_round > 0:
            teacher_path = student_file(out, rounds[start_round - 1])
            teacher, previous = load_denoiser(teacher_path, device=torch_device)
            teacher_lineage = previous.lineage
        progress_path = out / PROGRESS_FILE
        if start_round < len(rounds) and progress_path.is_file():
            state = load_checkpoint(progress_path)
            if state["extra"].get("round") == rounds[start_round]:
                resume_state, start_step = state, int(state["extra"]["round_step"])
        truncate_log(log_path, start_round * config.steps_per_round + start_step)
    elif log_path.exists():
        log_path.unlink()

    if console_print:
        print(f"pdd-distill: {teacher_info.model.name} model ({count_parameters(teacher) / 1e6:.2f} M params), rounds "
              f"{' → '.join(str(n) for n in [config.from_steps, *rounds])}, {config.steps_per_round} steps/round at batch "
              f"{config.batch_size}, {len(dataset)} training clips, {device_name}; folder {out}")

    summaries: list[dict[str, Any]] = []
    steps_done = start_round * config.steps_per_round + start_step
    bar = _RoundProgress(progress, total_steps, steps_done)
    try:
        for round_index in range(start_round, len(rounds)):
            n = rounds[round_index]
            frozen(teacher)
            student = new_student(teacher)
            optimizer, scheduler = round_optimizer(student, config)
            ema = EMA(student, decay=config.ema_decay) if config.ema_decay else None
            first = 0
            if resume_state is not None and round_index == start_round:
                student.load_state_dict(resume_state["model"])
                optimizer.load_state_dict(resume_state["optimizer"])
                scheduler.load_state_dict(resume_state["scheduler"])
                if ema is not None and resume_state.get("ema") is not None:
                    ema.load(resume_state["ema"], resume_state.get("ema_meta"))
                first = start_step
            intervals = sorted({1, n, *torch.randint(1, n + 1, (6,), generator=torch.Generator().manual_seed(n)).tolist()})
            error_before = one_step_error(teacher, teacher, probe, n, intervals=intervals)
            lineage = [*teacher_lineage, {"kind": "distill", "teacher": str(teacher_path), "teacher_steps": 2 * n,
                                                "steps": n, "data": record["data"], **config.to_dict()}]

            def info_at(step: int) -> CheckpointInfo:
                return CheckpointInfo(kind="student", audio=teacher_info.audio, model=teacher_info.model, steps=n,
                                      lineage=lineage, train_step=step)

            def save_progress(step: int) -> None:
                state = make_checkpoint_state(student, info_at(step), ema=ema, optimizer=optimizer, scheduler=scheduler,
                                              extra={"round": n, "round_step": step, "settings": config.to_dict()})
                save_checkpoint(out / PROGRESS_FILE, state)
                log_line({"event": "checkpoint", "round": n, "step": round_index * config.steps_per_round + step})

            window: list[float] = []
            clock = [time.perf_counter()]

            def on_step(step: int, loss: float) -> None:
                nonlocal steps_done
                steps_done += 1
                window.append(loss)
                global_step = round_index * config.steps_per_round + step
                if step % LOG_EVERY == 0 or step == config.steps_per_round:
                    elapsed = time.perf_counter() - clock[0]
                    rate = len(window) / elapsed if elapsed > 0 else 0.0
                    log_line({"step": global_step, "round": n, "round_step": step, "loss": float(np.mean(window)),
                              "lr": scheduler.get_last_lr()[0], "it_s": round(rate, 3)})
                    bar.update(steps_done, f"{2 * n}→{n}", float(np.mean(window)), rate)
                    window.clear()
                    clock[0] = time.perf_counter()
                if step % config.checkpoint_every == 0 and step < config.steps_per_round:
                    save_progress(step)
                if stop_after is not None and steps_done >= stop_after:
                    raise _Stopped()

            def batches(step: int) -> Any:
                global_step = round_index * config.steps_per_round + step - 1
                items = [dataset[i] for i in plan.indices(global_step)]
                if condition is None:
                    return torch.stack(items).to(torch_device)
                cond = torch.stack([c for _, c in items]).to(torch_device)
                return torch.stack([x for x, _ in items]).to(torch_device), cond, without_notes(cond, condition, teacher_info.audio)

            try:
                losses = train_steps(student, teacher, optimizer, scheduler, batches, n, config, first_step=first, ema=ema,
                                     seed_for_step=lambda step: step_seed(config.seed, round_index * config.steps_per_round
                                                                          + step, 0), on_step=on_step)
            except NonFiniteLoss as exc:
                if not cache.all_finite("train"):  # the data, not the learning rate
                    raise NonFiniteLoss(f"{exc}: the training data holds NaN/inf values (cache {record['data']}); "
                                        "rebuild it with `pdd-data prepare --force`") from None
                kept = (f"the round's last checkpoint {out / PROGRESS_FILE} is kept" if (out / PROGRESS_FILE).is_file()
                        else "finished students are kept")
                log_line({"event": "stopped", "round": n, "reason": str(exc)})
                raise NonFiniteLoss(f"{exc}; {kept}; continue with --resume after lowering the learning rate "
                                    f"(start a new run with --force and a lower --lr)") from None
            final = ema.model if ema is not None else student
            final.eval()
            error_after = one_step_error(final, teacher, probe, n, intervals=intervals)
            state = make_checkpoint_state(final, info_at(config.steps_per_round),
                                          extra={"schedule": ScheduleConfig.student(n).to_dict(), "settings": config.to_dict(),
                                                 **condition_extra(condition, cache),
                                                 "one_step_error": {"before": error_before, "after": error_after}})
            save_checkpoint(student_file(out, n), state)
            (out / PROGRESS_FILE).unlink(missing_ok=True)
            summary = {"event": "round", "round": n, "step": (round_index + 1) * config.steps_per_round,
                       "loss_last": losses[-1] if losses else None, "one_step_error_before": error_before,
                       "one_step_error_after": error_after, "student": str(student_file(out, n))}
            log_line(summary)
            summaries.append(summary)
            plot_loss(log_path, out / LOSS_PNG)
            teacher = frozen(copy.deepcopy(final))
            teacher_path, teacher_lineage = student_file(out, n), lineage
    except _Stopped:
        pass
    finally:
        bar.close()
    if console_print and start_round == len(rounds):
        print(f"pdd-distill: {out} is already complete (students {', '.join(str(n) for n in rounds)})")
    if console_print and summaries:
        for s in summaries:
            print(f"pdd-distill: student-{s['round']}: one-step error vs the teacher's two steps "
                  f"{s['one_step_error_before']:.4g} → {s['one_step_error_after']:.4g}")
    return DistillResult(students=find_students(out), log=log_path, rounds=summaries)


def teacher_condition(path: Path, state: dict[str, Any], info: CheckpointInfo) -> ConditionConfig | None:
    """The condition a conditioned teacher (or an earlier round's student) was trained with; None when unconditional."""
    if not getattr(info.model, "cond_channels", 0):
        return None
    extra = state.get("extra", {})
    try:
        return ConditionConfig.from_dict(extra["condition"])
    except (KeyError, TypeError, ConfigError):
        raise CheckpointError(f"{path} is a conditioned model whose checkpoint does not say its condition") from None


def condition_extra(condition: ConditionConfig | None, cache: Any) -> dict[str, Any]:
    """What a student checkpoint records of its condition (the next round and export read it)."""
    if condition is None:
        return {}
    return {"condition": condition.to_dict(), "roll": cache.roll_config.to_dict() if cache.roll_config else None}


def without_notes(cond: torch.Tensor, condition: ConditionConfig, audio: Any) -> torch.Tensor:
    """The guidance reference: the same condition with the notes removed (known frames kept)."""
    null = cond.clone()
    if condition.roll:
        null[:, : audio.pack_chunks * 2 * condition.n_pitches] = 0.0
    return null


class _Stopped(Exception):
    """Internal: `stop_after` reached (tests simulate a killed run with it)."""
