"""What a report says about the machine: JSON-able, the thread settings the code really reads, warnings, GPU memory."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pdd.runtime import machine
from pdd.runtime.machine import THREAD_ENV_VARS, machine_info, peak_rss_mb

RUNTIME = Path(machine.__file__).parent


def test_machine_info_is_json_and_describes_the_cpu():
    info = machine_info()
    json.dumps(info)
    assert info["cores_available"] >= 1 and info["cpu"]
    assert "onnxruntime" in info and isinstance(info["gpus"], list)
    assert peak_rss_mb() > 10


def test_recorded_thread_variables_are_the_ones_the_runtime_reads(monkeypatch) -> None:
    """A report once recorded PDD_ORT_THREADS while onnxruntime's threads came from PDD_THREADS: every PDD_* variable
    recorded must be read (os.environ.get / getenv) somewhere else in the runtime, and setting it must show."""
    sources = "\n".join(p.read_text() for p in RUNTIME.rglob("*.py") if p.name != "machine.py")
    read = set(re.findall(r"""(?:environ\.get|getenv)\(\s*["'](PDD_\w+)["']""", sources))
    recorded = {name for name in THREAD_ENV_VARS if name.startswith("PDD_")}
    assert recorded and recorded <= read, recorded - read
    for name in THREAD_ENV_VARS:
        monkeypatch.setenv(name, "1")
    assert machine_info()["threads_env"] == {name: "1" for name in THREAD_ENV_VARS}


def test_machine_warnings() -> None:
    jetson = {"cores_available": 8, "jetson": {"model": "Jetson AGX Orin", "nvpmodel": "MAXN", "clocks_locked": False}}
    assert any("jetson_clocks" in w for w in machine.machine_warnings(jetson, [1.0, 1.0, 1.0]))
    locked = {"cores_available": 8, "jetson": {"model": "Jetson AGX Orin", "nvpmodel": "MAXN", "clocks_locked": True}}
    assert machine.machine_warnings(locked, [1.0, 1.0, 1.0]) == []
    busy = machine.machine_warnings({"cores_available": 2}, [7.5, 6.0, 5.0])
    assert len(busy) == 1 and "load average 7.5 on 2 cores" in busy[0]
    assert machine.machine_warnings({"cores_available": 2}, None) == []


def test_gpu_memory_reads_this_process_from_nvidia_smi() -> None:
    table = "123, 512\n456, 100\n123, 24\n"
    assert machine.gpu_memory_mb(pid=123, query=lambda cmd: table) == 536.0
    assert machine.gpu_memory_mb(pid=789, query=lambda cmd: table) is None
    assert machine.gpu_memory_mb(pid=123, query=lambda cmd: None) is None
