"""The one exception type `trainers` raises for bad input; the CLI prints it on one line."""


class TrainersError(ValueError):
    """Bad input to trainers: the message names the bad value and what is accepted."""
