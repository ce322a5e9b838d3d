"""`pdd-run` (placeholder until the runtime issue lands)."""

from pdd.runtime.cli_common import not_built_yet

main = not_built_yet("pdd-run", "the runtime issue")
