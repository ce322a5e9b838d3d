"""`pdd-eval` (placeholder until the distillation issue lands)."""

from pdd.runtime.cli_common import not_built_yet

main = not_built_yet("pdd-eval", "the distillation issue")
