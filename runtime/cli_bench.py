"""`pdd-bench` (placeholder until the benchmark issue lands)."""

from pdd.runtime.cli_common import not_built_yet

main = not_built_yet("pdd-bench", "the benchmark issue")
