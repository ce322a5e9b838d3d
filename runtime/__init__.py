"""pdd.runtime — the torch-free core that ships to edge devices.

Audio front end (load, mel, normalisation, snake packing), diffusion schedule math and DDIM, Griffin-Lim,
and (in later modules) the engine bundle, backends and the `pdd-run` / `pdd-bench` commands.
Nothing here imports torch: training and export import from here, never the reverse.
"""

from pdd.runtime.errors import PddError

__version__ = "0.1.0"

__all__ = ["PddError", "__version__"]
