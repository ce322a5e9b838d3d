"""`pdd-train` (placeholder until the teacher issue lands)."""

from pdd.runtime.cli_common import not_built_yet

main = not_built_yet("pdd-train", "the teacher issue")
