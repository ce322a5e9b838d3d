"""Scaffolding the test folders share, imported as `tests.support` (pytest puts the repository root on sys.path):
the tiny engine bundle (`tiny_bundle`) and the one-error-line check of a refused command (`cli`)."""
