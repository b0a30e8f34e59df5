"""Exceptions raised by jaxlift. Every error names what was wrong and where."""
from __future__ import annotations


class JaxliftError(Exception):
    """Base class of jaxlift's own errors."""


class InputValueError(JaxliftError, ValueError):
    """An argument, option or file that jaxlift cannot use (a shape that does not fit, a name
    it does not know, a value out of range); the message names the argument and what was
    wrong. Also a ``ValueError``, so ``except ValueError`` keeps catching it."""


class InputTypeError(JaxliftError, TypeError):
    """An argument of a kind jaxlift does not take (a pytree where one array is needed, a
    string where a sequence of strings is); the message names the argument and the kind it
    got. Also a ``TypeError``, so ``except TypeError`` keeps catching it."""


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


class CompletenessError(JaxliftError, ArithmeticError):
    """Scores of some (input, reference) pairs do not sum to ``Δt = t(x) − t(r)`` within the
    certificate's bound (:mod:`jaxlift.certificate`); raised instead of returning them.

    ``pairs``: how many pairs failed; ``worst``: ``(input, reference[, target])`` of the worst;
    ``gap`` and ``bound`` its ``|ΣC − Δt|`` and bound; ``cause``: what a reading of the program
    found (a path around a marked layer, the rule of a primitive that lost part of ``Δt``, a
    NaN hidden by a select), with the user's source line where there is one."""

    def __init__(self, message: str, *, pairs: int = 0, worst: tuple = (), gap: float = 0.0,
                 bound: float = 0.0, cause: str = ""):
        self.pairs, self.worst, self.gap, self.bound, self.cause = pairs, worst, gap, bound, cause
        super().__init__(message)


class CLIError(JaxliftError):
    """A bad input to the command line tool (a file that cannot be read, data that do not fit
    the model, a place that cannot be written); its message is printed as it is and the exit
    status is 1."""


class UsageError(CLIError):
    """The command line asks for what cannot be (exit status 2, as argparse's own errors): a
    file or folder named on it that does not exist, or an option that does not fit the model
    or the other options (a ``--target`` out of range, an unknown ``--layer``, a bad
    ``--mode-option``, names of the wrong count, ``--png`` with a folder ``--out``, …)."""


class CompletenessWarning(UserWarning):
    """``check_completeness="warn"``: scores of some pairs do not sum to ``Δt`` within the
    certificate's bound (the message says which, by how much, and why)."""
