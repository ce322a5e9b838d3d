"""TensorRT plans of a bundle: the per-machine key of their folder under trt/, and finding the record of a key's plans
(docs/architecture.md, "Engine bundles"; the manifest's "trt" entry is described in pdd.runtime.manifest).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pdd.runtime.errors import BundleError
from pdd.runtime.manifest import PRECISIONS, plan_entries
from pdd.runtime.untrusted import load_json, resolve_inside


def plan_key(gpu_name: str, trt_version: str, precision: str) -> str:
    """Folder name under trt/ for plans built on `gpu_name` with TensorRT `trt_version`: "<gpu>-<version>-<precision>".

    The GPU name is reduced to [A-Za-z0-9_.] runs joined by "_" (e.g. "NVIDIA_H200-10.7.0-fp16").
    """
    if precision not in PRECISIONS:
        raise BundleError(f"unknown precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    gpu = "_".join(re.findall(r"[A-Za-z0-9_.]+", gpu_name)) or "gpu"
    version = "_".join(re.findall(r"[A-Za-z0-9_.]+", trt_version)) or "unknown"
    return f"{gpu}-{version}-{precision}"


def recorded_plans(bundle_dir: Path, manifest: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The PLANS dict for `key`: from the manifest's trt.plans, else from trt/<key>/plans.json; None if neither."""
    trt = manifest.get("trt")
    plans = trt.get("plans") if isinstance(trt, dict) else None
    if isinstance(plans, dict) and isinstance(plans.get(key), dict):  # load_bundle checked the paths it names
        return plans[key]
    sidecar = bundle_dir / "trt" / key / "plans.json"
    if sidecar.is_file():
        try:
            plans = load_json(sidecar, "TensorRT plan record", BundleError)
            for entry in plan_entries(plans):
                resolve_inside(bundle_dir, entry.get("file"), f"{sidecar}: plan file", BundleError)
            return plans
        except BundleError:
            return None  # a broken or foreign cache is rebuilt, not fatal (and never read outside the bundle)
    return None


__all__ = ["plan_key", "recorded_plans"]
