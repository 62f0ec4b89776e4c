"""Errors the CLI turns into one clear line (exit code 2 for user input problems)."""


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped (a key may hold any of them)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Mamba4netError(Exception):
    """Base class: the message is shown to the user as one line, without a traceback."""

    exit_code = 1


class ConfigError(Mamba4netError):
    """A config that can't be used: bad YAML, unknown key, wrong type, unknown plugin name..."""

    exit_code = 2


class PluginError(Mamba4netError):
    """A plugin that misbehaves: duplicate names, bad registrations, import failures."""

    exit_code = 2


class DataError(Mamba4netError):
    """Input data that can't be read: a corrupt trace, a malformed job file, a bad checkpoint."""

    exit_code = 2


class TrainingError(Mamba4netError):
    """Training can't go on (e.g. a NaN loss); what was written so far is kept."""

    exit_code = 1


class WriteError(Mamba4netError):
    """A file could not be written (disk full, permission denied); the previous version is kept."""

    exit_code = 1


class BusyError(Mamba4netError):
    """A run folder another live process is writing."""

    exit_code = 2


class ResultError(Mamba4netError):
    """A run finished but a model's metric is NaN or infinite (results and report were written)."""

    exit_code = 1
