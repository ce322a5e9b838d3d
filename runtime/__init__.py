"""pdd.runtime — the torch-free core that ships to edge devices.

Music in three lines:

    from pdd.runtime import Engine
    with Engine.load() as engine:                       # the shipped default engine, or a bundle folder or name
        out = engine.generate(n=2, seed=7)              # out.audio: (2, samples) float32 at out.sample_rate

Beside `Engine`: the audio front end (load, mel, normalisation, snake packing), diffusion schedule math and DDIM,
Griffin-Lim, engine bundles, backends and the `pdd-run` / `pdd-bench` / `pdd-serve` commands. Nothing here imports
torch: training and export import from here, never the reverse.
"""

from typing import Any

from pdd.runtime.errors import PddError

__version__ = "0.1.0"

__all__ = ["Engine", "GenerationOutput", "PddError", "__version__"]

_LAZY = {"Engine": "pdd.runtime.engine", "GenerationOutput": "pdd.runtime.engine"}


def __getattr__(name: str) -> Any:
    """`Engine` and `GenerationOutput` are imported on first use: every `pdd.runtime.*` import runs this package
    first, and numpy, the bundle reader and the backends must not slow down `--help` or the cold start."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pdd.runtime' has no attribute {name!r}")
