"""User-facing errors: the CLI prints their message (no traceback) and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (config, data, files). The message says what to do."""


class DataError(UserError):
    """A dataset is missing, incomplete or corrupt."""
