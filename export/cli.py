"""`pdd-export` (placeholder until the export issue lands)."""

from pdd.runtime.cli_common import not_built_yet

main = not_built_yet("pdd-export", "the export issue")
