"""The one exception type of the dashboard: bad input, shown to the user as a note, never a traceback."""


class AppError(ValueError):
    """Bad input to the dashboard; the message names the bad value and the accepted ones."""
