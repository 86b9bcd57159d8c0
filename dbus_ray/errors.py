"""Errors users act on, and how an error that crossed actor boundaries is shown: its innermost
message on one line."""

from __future__ import annotations


class DbusError(Exception):
    """A failure with a one-line message for the user (no traceback)."""


class DecodeError(DbusError):
    """Binlog bytes that cannot be decoded (truncated or corrupt event)."""


def reason(exc: BaseException) -> str:
    import ray.exceptions

    while isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    if isinstance(exc, ray.exceptions.ActorDiedError):
        text = str(exc)
        for marker in ("DbusError: ", "RuntimeError: ", "ValueError: ", "OSError: ", "Error: "):
            if marker in text:
                return text.rsplit(marker, 1)[1].strip().splitlines()[0]
        return "actor died: " + text.strip().splitlines()[0]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
