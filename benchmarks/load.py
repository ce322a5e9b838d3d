"""Load test for `pdd-serve`, loopback only, bounded in requests and time, side by side in one run:

1. the `pdd-run` rates: sequential warm (`pdd-run -n K --batch-size 1` as its library call, in this process), offline
   batched (`--batch-size 4`), and cold (one `pdd-run -n 1` process per clip, what a script calling the CLI gets);
2. `pdd-serve` in several configurations (plain: --max-batch 1 --no-pipeline; pipelined; batched + pipelined; batched with
   --no-exact), each its own server process on a free 127.0.0.1 port: cold start to the first answer, then closed-loop
   clients at each concurrency (p50/p90/p99 latency, clips/s), in interleaved rounds together with the warm baselines;
3. a soak: `--soak` requests from 8 clients, a mix of valid and invalid bodies, counting answers by status and sampling the
   server's RSS (/proc) through the run.

    python benchmarks/load.py                                  # the shipped engine, 3 rounds × 8 requests per level, soak 1000
    python benchmarks/load.py --engine DIR --rounds 2 --soak 200 --json load.json --markdown load.md

Performance numbers live in reports like this one's output, never in tests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIGS = {
    "plain": ["--max-batch", "1", "--no-pipeline"],
    "pipeline": ["--max-batch", "1", "--pipeline"],
    "pipeline+2decoders": ["--max-batch", "1", "--pipeline", "--decoders", "2"],
    "batch4+pipeline": ["--max-batch", "4", "--pipeline"],
    "batch4+pipeline+no-exact": ["--max-batch", "4", "--pipeline", "--no-exact"],
}
INVALID_BODIES = [b'{"seed": 7', b"[1, 2]", b'{"seed": "x"}', b'{"seed": -5}', b'{"steps": 3}', b'{"vocoder": "nope"}',
                  b'{"format": "mp3"}', b'{"seed": true}', b'{"colour": 1}', b'{"seed": ' + b"9" * 5000 + b"}"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- baselines ---------------------------------------------------------------------------------------------------------
class PddRunWarm:
    """`pdd-run -n CLIPS --batch-size BATCH` as the library call it makes, in this process, the bundle loaded once before
    any clock starts: batch 1 is the sequential rate (sessions opened per call, as each pdd-run invocation does)."""

    def __init__(self, engine: str | None, clips: int, batch: int) -> None:
        from pdd.runtime.engine import load_engine_bundle

        self.engine, self.clips, self.batch = engine, clips, batch
        self.bundle = load_engine_bundle(engine)
        self.seconds: list[float] = []
        self.clip_ms: list[float] = []
        self.run()  # warm-up, not kept
        self.seconds.clear()
        self.clip_ms.clear()

    def run(self) -> None:
        from pdd.runtime.generate import RunOptions, generate

        with tempfile.TemporaryDirectory() as out:
            options = RunOptions(engine=self.engine, n=self.clips, batch_size=self.batch, seed=len(self.seconds), out=Path(out))
            start = time.perf_counter()
            results = generate(options, bundle=self.bundle)
            self.seconds.append(time.perf_counter() - start)
        # Per clip without the per-call setup (sessions): each sidecar's sample + decode share and its write.
        self.clip_ms += [r.meta["timings_ms"]["generate"] + r.meta["timings_ms"]["write"] for r in results]

    def summary(self) -> dict[str, Any]:
        total = self.clips * len(self.seconds)
        return {"clips": total, "batch": self.batch, "clips_per_s": total / sum(self.seconds),
                "steady_clips_per_s": 1e3 / statistics.mean(self.clip_ms), "mean_ms": 1e3 * sum(self.seconds) / total}


def pdd_run_cold(engine: str | None, clips: int) -> dict[str, Any]:
    """Clips/s of one `pdd-run -n 1` process per clip."""
    times = []
    with tempfile.TemporaryDirectory() as out:
        for i in range(clips):
            command = [sys.executable, "-m", "pdd.runtime.cli_run", "-n", "1", "--seed", str(i), "--out", f"{out}/{i}", "-q"]
            command += ["--engine", engine] if engine else []
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    return {"clips": clips, "clips_per_s": clips / sum(times), "p50_ms": 1e3 * statistics.median(times)}


# -- the server --------------------------------------------------------------------------------------------------------
@dataclass
class Server:
    process: subprocess.Popen
    port: int
    ready_s: float = 0.0  # process start → "listening" (imports, engine loaded, default sessions open)
    cold_start_s: float = 0.0  # process start → first generated clip answered

    @classmethod
    def start(cls, engine: str | None, extra: list[str]) -> "Server":
        port = free_port()
        command = [sys.executable, "-m", "pdd.runtime.cli_serve", "--port", str(port), *extra]
        command += ["--engine", engine] if engine else []
        started = time.perf_counter()
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        line = process.stderr.readline()
        if "listening on" not in line:
            process.kill()
            raise SystemExit(f"pdd-serve did not start: {line.strip()}")
        server = cls(process, port, ready_s=time.perf_counter() - started)
        status, _ = server.post(json.dumps({"seed": 0}).encode())
        if status != 200:
            raise SystemExit(f"pdd-serve's first answer was HTTP {status}")
        server.cold_start_s = time.perf_counter() - started
        return server

    def post(self, body: bytes, connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        own = connection is None
        connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            if own:
                connection.close()

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    valid_not_ok: int = 0
    transport_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, seconds: float, valid: bool) -> None:
        with self.lock:
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if valid:
                self.latencies.append(seconds)
                self.valid_not_ok += int(status != 200)


def closed_loop(server: Server, clients: int, requests: int, time_limit: float, bodies: Any) -> tuple[Tally, float]:
    """`clients` threads, each with one keep-alive connection, send the next of `requests` bodies as soon as their last
    answer arrives; stops at `requests` or `time_limit` seconds. `bodies(i)` → (body, valid)."""
    tally, counter, lock = Tally(), iter(range(requests)), threading.Lock()
    deadline = time.perf_counter() + time_limit

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        while time.perf_counter() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            body, valid = bodies(index)
            start = time.perf_counter()
            try:
                status, _ = server.post(body, connection)
            except (OSError, http.client.HTTPException):
                with tally.lock:
                    tally.transport_errors += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                continue
            tally.add(status, time.perf_counter() - start, valid)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.perf_counter() - start


def valid_body(index: int) -> tuple[bytes, bool]:
    return json.dumps({"seed": 1000 + index}).encode(), True


@dataclass
class Arm:
    """One server configuration and what it measured, per concurrency level, over all rounds."""

    name: str
    server: Server
    tallies: dict[int, Tally] = field(default_factory=dict)
    walls: dict[int, float] = field(default_factory=dict)

    def run_level(self, clients: int, requests: int, time_limit: float, first_seed: int) -> None:
        tally, wall = closed_loop(self.server, clients, requests, time_limit, lambda i: valid_body(first_seed + i))
        merged = self.tallies.setdefault(clients, Tally())
        merged.latencies += tally.latencies
        for key, count in tally.statuses.items():
            merged.statuses[key] = merged.statuses.get(key, 0) + count
        self.walls[clients] = self.walls.get(clients, 0.0) + wall

    def summary(self) -> dict[str, Any]:
        rows = []
        for clients, tally in sorted(self.tallies.items()):
            ok = tally.statuses.get("200", 0)
            rows.append({"concurrency": clients, "requests": len(tally.latencies), "ok": ok,
                         "clips_per_s": ok / self.walls[clients],
                         **{f"p{q}_ms": 1e3 * percentile(tally.latencies, q) for q in (50, 90, 99)}})
        return {"config": self.name, "flags": " ".join(CONFIGS[self.name]), "cold_start_s": self.server.cold_start_s,
                "ready_s": self.server.ready_s,
                "levels": rows}


def interleaved(engine: str | None, names: list[str], levels: list[int], rounds: int, requests: int,
                time_limit: float, baselines: list[PddRunWarm]) -> list[dict[str, Any]]:
    """Every server started once (cold start measured one at a time), then `rounds` rounds; in each, every level runs
    on every server, the order rotating per round, and the warm pdd-run baselines run once: a machine whose load drifts
    hits all arms alike, and only numbers from this one run are compared."""
    arms = [Arm(name, Server.start(engine, CONFIGS[name])) for name in names]
    try:
        for arm in arms:
            closed_loop(arm.server, 2, 4, time_limit, valid_body)  # warm-up: first batches, the exactness checks
        seed = 10_000
        for round_index in range(rounds):
            for baseline in baselines:
                baseline.run()
            for clients in levels:
                order = arms[round_index % len(arms):] + arms[: round_index % len(arms)]
                for arm in order:
                    count = max(requests, 2 * clients)
                    arm.run_level(clients, count, time_limit, seed)
                    seed += count
            print(f"  round {round_index + 1}/{rounds} done", file=sys.stderr)
    finally:
        for arm in arms:
            arm.server.stop()
    return [arm.summary() for arm in arms]


def soak(engine: str | None, requests: int, clients: int, time_limit: float) -> dict[str, Any]:
    """Mixed valid/invalid requests; RSS sampled every 0.5 s. Growth is judged from the RSS after the first 10 % of the
    requests (allocator pools and sessions warmed) to the end."""
    server = Server.start(engine, CONFIGS["batch4+pipeline"])
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample_rss() -> None:
        while not done.wait(0.5):
            samples.append((time.perf_counter(), rss_mb(server.process.pid)))

    chooser = random.Random(7)
    plan = [chooser.random() < 0.6 for _ in range(requests)]  # 60 % valid

    def body(index: int) -> tuple[bytes, bool]:
        return valid_body(index) if plan[index] else (INVALID_BODIES[index % len(INVALID_BODIES)], False)

    watcher = threading.Thread(target=sample_rss)
    rss_start = rss_mb(server.process.pid)
    watcher.start()
    try:
        warm, _ = closed_loop(server, clients, requests // 10, time_limit, body)
        rss_warm = rss_mb(server.process.pid)
        tally, wall = closed_loop(server, clients, requests - requests // 10, time_limit,
                                  lambda i: body(i + requests // 10))
        rss_end = rss_mb(server.process.pid)
    finally:
        done.set()
        watcher.join()
        alive = server.process.poll() is None
        exit_code = server.stop()
    statuses = dict(warm.statuses)
    for key, count in tally.statuses.items():
        statuses[key] = statuses.get(key, 0) + count
    server_errors = sum(count for key, count in statuses.items() if key.startswith("5"))
    return {"requests": sum(statuses.values()), "valid": sum(plan), "statuses": statuses, "server_errors": server_errors,
            "valid_not_ok": warm.valid_not_ok + tally.valid_not_ok, "transport_errors": warm.transport_errors +
            tally.transport_errors, "alive_at_end": alive, "exit_code_on_sigterm": exit_code, "wall_s": wall,
            "rss_mb": {"start": rss_start, "after_warmup": rss_warm, "end": rss_end,
                       "max": max((m for _, m in samples), default=rss_end)},
            "rss_growth_pct": 100 * (rss_end - rss_warm) / rss_warm}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# pdd-serve load test ({report['engine']}, {report['machine']})", "",
             f"Load average at start/end: {report['load_start']} / {report['load_end']}.", "",
             "| what | concurrency | clips/s | × pdd-run sequential | × pdd-run cold | p50 ms | p90 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    seq, cold = report["pdd_run_warm"]["steady_clips_per_s"], report["pdd_run_cold"]["clips_per_s"]
    for key, label in (("pdd_run_warm", "--batch-size 1"), ("pdd_run_batched", "--batch-size 4")):
        run = report[key]
        lines.append(f"| pdd-run {label}, per clip, sessions open (sidecar times) | 1 | {run['steady_clips_per_s']:.2f} | "
                     f"{run['steady_clips_per_s'] / seq:.2f} | {run['steady_clips_per_s'] / cold:.2f} | | | |")
        lines.append(f"| pdd-run -n {run['clips'] // report['rounds']} {label}, whole calls (sessions opened per call) "
                     f"| 1 | {run['clips_per_s']:.2f} | {run['clips_per_s'] / seq:.2f} | {run['clips_per_s'] / cold:.2f} "
                     f"| | | |")
    lines.append(f"| pdd-run -n 1, a process per clip | 1 | {cold:.2f} | {cold / seq:.2f} | 1.00 | "
                 f"{report['pdd_run_cold']['p50_ms']:.0f} | | |")
    for config in report["servers"]:
        for row in config["levels"]:
            lines.append(f"| pdd-serve {config['config']} | {row['concurrency']} | {row['clips_per_s']:.2f} | "
                         f"{row['clips_per_s'] / seq:.2f} | {row['clips_per_s'] / cold:.2f} | {row['p50_ms']:.0f} | "
                         f"{row['p90_ms']:.0f} | {row['p99_ms']:.0f} |")
    lines += ["", "Cold start, process start → listening / → first clip answered: " +
              ", ".join(f"{c['config']} {c['ready_s']:.2f} / {c['cold_start_s']:.2f} s" for c in report["servers"])]
    if report.get("soak"):
        s = report["soak"]
        lines += ["", f"Soak: {s['requests']} requests ({s['valid']} valid) from 8 clients in {s['wall_s']:.0f} s: "
                  f"statuses {s['statuses']}, server errors {s['server_errors']}, valid not answered 200 "
                  f"{s['valid_not_ok']}, transport errors {s['transport_errors']}, alive at end {s['alive_at_end']}; "
                  f"RSS MB start {s['rss_mb']['start']:.0f}, after 10 % {s['rss_mb']['after_warmup']:.0f}, "
                  f"end {s['rss_mb']['end']:.0f}, max {s['rss_mb']['max']:.0f} → growth {s['rss_growth_pct']:+.1f} %"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default=None, help="bundle folder (default: the shipped engine)")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=8,
                        help="requests per concurrency level per round (at least 2 per client)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all servers and baselines")
    parser.add_argument("--baseline-clips", type=int, default=4, help="clips per pdd-run baseline call per round")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per level (and per soak half)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"any of: {', '.join(CONFIGS)}")
    parser.add_argument("--soak", type=int, default=1000, help="soak requests (0: skip)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not 1 <= args.requests <= 10_000 or not 0 <= args.soak <= 100_000 or not 1 <= args.rounds <= 100:
        raise SystemExit(f"error: bad --configs {unknown} / --requests / --rounds / --soak")
    report: dict[str, Any] = {"engine": args.engine or "shipped default", "machine": f"{os.cpu_count()} CPUs",
                              "rounds": args.rounds,
                              "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    print("pdd-run baselines…", file=sys.stderr)
    sequential, batched = PddRunWarm(args.engine, args.baseline_clips, 1), PddRunWarm(args.engine, args.baseline_clips, 4)
    report["pdd_run_cold"] = pdd_run_cold(args.engine, max(2, args.baseline_clips // 2))
    print("servers, interleaved…", file=sys.stderr)
    report["servers"] = interleaved(args.engine, configs, levels, args.rounds, args.requests, args.time_limit,
                                    [sequential, batched])
    report["pdd_run_warm"], report["pdd_run_batched"] = sequential.summary(), batched.summary()
    report["soak"] = soak(args.engine, args.soak, 8, args.time_limit * 5) if args.soak else None
    report["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
