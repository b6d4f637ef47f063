"""The one exception type gradscope raises for bad input, so callers and the CLI can catch it."""


class GradscopeError(ValueError):
    """Bad input to gradscope: the message names the bad value and what is accepted."""


def one_of(kind: str, value: object, accepted: "tuple[str, ...] | list[str]") -> GradscopeError:
    """Build the standard 'unknown X' error listing the accepted values."""
    return GradscopeError(f"unknown {kind} {value!r}; expected one of: {', '.join(accepted)}")
