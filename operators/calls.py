"""Waiting on Ray calls whose actors raise the project's own errors, and errors told briefly."""

from __future__ import annotations

import ray

from ausm_stream.errors import AUSMStreamError


def result(ref: ray.ObjectRef, timeout: float = 120) -> object:
    """``ray.get`` that raises the project's own error when an actor raised one: Ray wraps
    it with the remote traceback, which is for logs, not for API clients."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, AUSMStreamError):
            raise cause from None
        raise


BRIEF_CHARS = 300
"""How much of an error a health answer or a log line quotes."""


def brief(exc: BaseException) -> str:
    """An error in one line of at most ``BRIEF_CHARS``: its type and first line (of its cause,
    for a Ray task's error, whose own text is the remote traceback)."""
    cause = getattr(exc, "cause", None) or exc
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return text[:BRIEF_CHARS]
