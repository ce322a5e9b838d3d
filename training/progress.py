"""Progress of a long run on rank 0: a rich bar on a terminal, a plain line every so often where output goes to a file."""

from __future__ import annotations

import math
import time


class Progress:
    """Progress on rank 0: a rich bar (loss, it/s, ETA) on a terminal; where output goes to a file (nohup, CI), a plain
    line at most every `PLAIN_EVERY_S` seconds so the log still shows where the run is. A no-op elsewhere or when disabled.
    """

    PLAIN_EVERY_S = 30.0

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.progress = None
        self.plain = False
        if not enabled:
            return
        import sys

        if not sys.stdout.isatty():
            self.plain, self.total, self.start = True, total, start
            self.started = self.last_print = time.perf_counter()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} it/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=start, loss="…", rate="…")

    def update(self, step: int, loss: float, rate: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", rate=f"{rate:.2f}")
        elif self.plain:
            now = time.perf_counter()
            if now - self.last_print < self.PLAIN_EVERY_S and step < self.total:
                return
            self.last_print = now
            overall = (step - self.start) / max(now - self.started, 1e-9)
            eta = (self.total - step) / overall if overall > 0 else float("nan")
            eta_text = f"{int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}" if math.isfinite(eta) else "?"
            print(f"step {step}/{self.total}  loss {loss:.4f}  {rate:.2f} it/s  ETA {eta_text}", flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
