"""Exceptions raised by jaxlift. Every error names what was wrong and where."""
from __future__ import annotations


class JaxliftError(Exception):
    """Base class of jaxlift's own errors."""


class UnsupportedPrimitiveError(JaxliftError, NotImplementedError):
    """A live equation of the traced program has no DeepLIFT rule.

    The message names the primitive and the user's source line (from ``eqn.source_info``).
    """

    def __init__(self, primitive: str, where: str, detail: str = ""):
        self.primitive = primitive
        self.where = where
        msg = f"jaxlift has no DeepLIFT rule for primitive '{primitive}' (at {where})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class NonFiniteScoresError(JaxliftError, ArithmeticError):
    """Scores or ``Δt`` came out NaN or Inf. Raised instead of returning them; the message names
    the pair, and the primitive and source line where the multipliers first stopped being
    finite (or says that ``fn``'s own target is not finite there)."""

    def __init__(self, message: str, primitive: str | None = None, where: str | None = None):
        self.primitive = primitive
        self.where = where
        super().__init__(message)
