"""`pdd-data` (placeholder until the data issue lands)."""

from pdd.runtime.cli_common import not_built_yet

main = not_built_yet("pdd-data", "the data issue")
