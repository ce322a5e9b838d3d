"""The default engine's recipe and card tooling: the script parses, uses only real CLI options, and the harmonicity check
separates pitched sound from noise."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "engines" / "recipes" / "small-piano.sh"
RECIPES = [RECIPE, ROOT / "engines" / "recipes" / "two-stage.sh"]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe_is_valid_bash_and_names_only_real_options(recipe: Path) -> None:
    subprocess.run(["bash", "-n", str(recipe)], check=True)
    text = recipe.read_text()
    helps = {
        "pdd-data corpus": ["pdd-data", "corpus", "--help"],
        "pdd-data scores": ["pdd-data", "scores", "--help"],
        "pdd-prior train": ["pdd-prior", "train", "--help"],
        "pdd-data prepare": ["pdd-data", "prepare", "--help"],
        "pdd-train": ["pdd-train", "--help"],
        "pdd-distill": ["pdd-distill", "--help"],
        "pdd-eval": ["pdd-eval", "--help"],
        "pdd-export": ["pdd-export", "--help"],
        "pdd-vocoder train": ["pdd-vocoder", "train", "--help"],
    }
    for command, help_cmd in helps.items():
        used = set()
        for line in re.findall(rf"{command} .*(?:\n\s+.*\\\\?)*", text):
            used |= set(re.findall(r"(--[a-z][a-z-]+)", line))
        if not used:
            continue
        env = {**os.environ, "COLUMNS": "250"}  # wide help: typer would wrap option names otherwise
        out = subprocess.run(help_cmd, capture_output=True, text=True, env=env).stdout
        missing = sorted(opt for opt in used if opt not in out)
        assert not missing, f"{command} has no option(s) {missing}"


def test_harmonicity_separates_notes_from_noise() -> None:
    spec = importlib.util.spec_from_file_location("card_assets", ROOT / "engines" / "recipes" / "card_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rate = 22050
    t = np.arange(rate * 4) / rate
    notes = sum(np.sin(2 * np.pi * f * t) * np.exp(-2 * (t % 1.0)) for f in (220.0, 277.2, 329.6))
    noise = np.random.default_rng(0).normal(size=t.size)
    assert module.harmonicity(notes, rate) > 30 > 15 > module.harmonicity(noise, rate)
