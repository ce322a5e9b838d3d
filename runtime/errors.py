"""Exception types of pdd: every error a user can cause is one of these, with a one-line message."""


class PddError(Exception):
    """Base class: the CLIs print `error: <message>` and exit non-zero, never a traceback."""


class ConfigError(PddError, ValueError):
    """A preset or config that does not exist or does not validate."""


class AudioError(PddError):
    """An audio file that cannot be read or written."""


class BundleError(PddError):
    """An engine bundle that is missing, stale or corrupt."""


class BackendUnavailable(PddError):
    """A requested inference backend whose package or driver is not installed."""
