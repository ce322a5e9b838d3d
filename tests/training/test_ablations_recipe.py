"""benchmarks/ablations.py: the variants it trains match pdd-train's flags, the step budget, and the table from pdd-eval JSONs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ablations  # noqa: E402

from pdd.training.train import TrainConfig  # noqa: E402


def test_every_variant_is_a_valid_training_config() -> None:
    for name in ablations.VARIANTS:
        settings = ablations.variant_settings(name)
        fields = {k: settings[k] for k in ("arch", "pack", "top_width", "weighting", "lr", "batch_size")}
        config = TrainConfig(data="cache", preset="small", **fields)
        assert config.arch in ("unet1d", "unet2d")
    assert ablations.variant_settings("unet2d")["pack"] == "none"
    assert ablations.variant_settings("top-192")["top_width"] == 192
    assert ablations.variant_settings("base") == dict(ablations.BASE_FLAGS, arch="unet1d", pack="snake", top_width=0,
                                                      weighting="snr+1")


def write_eval(folder: Path, fd_bp: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    rows = [{"name": "real vs real", "fd_bp": 0.2, "fd_mel": 10.0, "flux_mean": 2.0, "silent_fraction": 0.1, "band_std": 0.4}]
    rows += [{"name": name, "fd_bp": value, "fd_mel": 100 * value, "flux_mean": 3.0, "silent_fraction": 0.02, "band_std": 0.3,
              "sample_s_per_clip": 0.5} for name, value in fd_bp.items()]
    (folder / "table.json").write_text(json.dumps({"rows": rows}))


def test_table_from_eval_jsons_with_ratios_budget_and_seed_check(tmp_path: Path) -> None:
    for seed, (a, b) in {"s0": (1.0, 2.0), "s1": (1.5, 2.5)}.items():
        write_eval(tmp_path / f"eval-base-{seed}", {"teacher DDIM@64": a})
        write_eval(tmp_path / f"eval-unet2d-{seed}", {"teacher DDIM@64": b})
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps({"base": {"minutes": 120, "steps": 36000}, "unet2d": {"minutes": 120, "steps": 14000}}))
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps({"base": {"parameters": 4790000, "gflop_per_forward": 0.255}}))
    out = tmp_path / "ablations.md"
    ablations.main(["table", "--row", f"base (DDIM@64)={tmp_path}/eval-base-s0#teacher DDIM@64",
                    "--row", f"unet2d (DDIM@64)={tmp_path}/eval-unet2d-s0#teacher DDIM@64",
                    "--budget", str(budget), "--cost", str(cost), "--out", str(out), "--check-seed=-s0:-s1"])
    text = out.read_text()
    assert "| base (DDIM@64) | 120 min (36000 steps) | 4.79 M | 0.255 | 1 | 100 | 3 (1.50×) | 0.02 (0.20×) | 0.3 (0.75×) | 0.5 |" in text
    assert "| unet2d (DDIM@64) | 120 min (14000 steps) | — |" in text
    assert "Ordering by fd_bp with the second evaluation seed ('-s1' folders): the same." in text
    assert "Not measured" not in text and out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        ablations.main(["table", "--row", f"base={tmp_path}/eval-base-s0#teacher DDIM@64", "--out", str(out)])
    ablations.main(["table", "--row", f"base={tmp_path}/eval-base-s0#teacher DDIM@64", "--out", str(out), "--force", "--smoke"])
    assert out.read_text().startswith("**Not measured yet")


def test_a_missing_row_is_one_error_line(tmp_path: Path) -> None:
    write_eval(tmp_path / "eval", {"teacher DDIM@64": 1.0})
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "table", "--row",
                           f"x={tmp_path}/eval#teacher DDIM@8", "--out", str(tmp_path / "t.md")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1


def test_recipe_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "ablations.sh")]).returncode == 0


def test_table_replaces_only_the_marked_section_of_the_page(tmp_path: Path) -> None:
    write_eval(tmp_path / "eval", {"teacher DDIM@64": 1.0})
    page = tmp_path / "ablations.md"
    page.write_text(f"# Title\nprose before\n{ablations.TABLE_START}\nNot measured yet.\n{ablations.TABLE_END}\nprose after\n")
    ablations.main(["table", "--row", f"base (DDIM@64)={tmp_path}/eval#teacher DDIM@64", "--out", str(page)])
    text = page.read_text()
    assert text.startswith("# Title\nprose before\n") and text.endswith(f"{ablations.TABLE_END}\nprose after\n")
    assert "| base (DDIM@64) |" in text and "Not measured yet." not in text
    ablations.main(["table", "--row", f"base (DDIM@64)={tmp_path}/eval#teacher DDIM@64", "--out", str(page)])  # again: same
    assert page.read_text() == text


def test_published_table_has_a_measured_row_for_every_paper_claim():
    text = (ROOT / "docs" / "ablations.md").read_text()
    table = text.split(ablations.TABLE_START)[1].split(ablations.TABLE_END)[0]
    claims = ["base (DDIM@64)", "unet2d (DDIM@64)",  # 1D vs 2D
              "reshape (DDIM@64)", "no-pack (DDIM@64)",  # snake vs reshape vs none
              "base (DDPM@1000)", "base (DDIM@8)", "base (student@8)"]  # DDPM vs DDIM vs PDD
    for label in claims:
        rows = [line for line in table.splitlines() if line.startswith(f"| {label} |")]
        assert len(rows) == 1, label
        fd_bp = float(rows[0].split("|")[5])  # row | budget | params | GFLOP | FD-BP
        assert 0 < fd_bp < 100, (label, fd_bp)
    assert "Not measured" not in text and "Ordering by fd_bp with the second evaluation seed" in table
