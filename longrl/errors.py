"""User-facing errors: one clear message, no traceback (STYLE: Errors)."""


class UserError(Exception):
    """Bad input from the user (config, data file, model directory, command line).

    The CLI prints ``error: <message>`` and exits with status 2; nothing half-written is left.
    The message names the file, line or field at fault.
    """
