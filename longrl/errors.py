"""User-facing errors: one clear message, no traceback (STYLE: Errors)."""


class UserError(Exception):
    """Bad input from the user (config, data file, model directory, command line).

    The CLI prints ``error: <message>`` and exits with status 2; nothing half-written is left.
    The message names the file, line or field at fault.
    """


class WorkerFailed(Exception):
    """A remote worker (trainer, rollout or reward) died or raised.

    The message names the worker, its node and the error. The CLI prints it and exits with
    status 1; checkpoints are written atomically, so the last one is intact for ``--resume``.
    """
