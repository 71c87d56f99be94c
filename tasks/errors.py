"""Errors the user must fix (raised) versus failures a candidate suffers (recorded)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment: the CLI prints the message on one line and exits 2."""


# A programmer's error, not something a candidate suffered: it stops the command with its
# traceback instead of becoming a FAILED candidate (Olive's EXCEPTIONS_TO_RAISE).
EXCEPTIONS_TO_RAISE: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    NameError,
    ImportError,
    AssertionError,
    SyntaxError,
)


class CandidateFailed(Exception):
    """A candidate could not be built or evaluated; it is recorded FAILED and the sweep goes on."""


def one_line(exc: BaseException) -> str:
    """A one-line message for ``exc``; pydantic errors keep only their own messages."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment]
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            msg = str(err.get("msg", ""))
            msg = msg.removeprefix("Value error, ")
            loc = ".".join(str(x) for x in err.get("loc", ()))
            in_msg = msg and loc and loc.split(".")[-1] in msg
            parts.append(msg if in_msg or not loc else f"{loc}: {msg}")
        return "; ".join(parts)
    return " ".join(str(exc).split()) or type(exc).__name__
