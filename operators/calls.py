"""Waiting on Ray calls whose actors raise the project's own errors."""

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
