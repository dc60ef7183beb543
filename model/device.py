"""Which device a model runs on: ``cpu``, ``cuda`` or ``auto``, chosen explicitly.

``cuda`` where none is visible is an error that says why, never a quiet fall back to the
CPU: a worker that should hold a GPU and runs on the CPU instead would be 10-100x slower
with nothing to show for it but lag.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

from ausm_stream.errors import InvalidInputError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str) -> torch.device:
    """The device ``choice`` names (``auto``: CUDA when visible, else the CPU), logged."""
    if choice not in DEVICES:
        raise InvalidInputError(f"device must be one of {list(DEVICES)}, got {choice!r}")
    visible = torch.cuda.is_available()
    if choice == "cuda" and not visible:
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no GPU visible"
        raise InvalidInputError(
            f"device 'cuda' was asked for, but torch sees no CUDA device ({build}; under Ray, "
            "a worker sees GPUs only when it reserves them: worker.gpus); use 'cpu' or 'auto'"
        )
    device = torch.device("cuda" if choice == "cuda" or (choice == "auto" and visible) else "cpu")
    log.info("device: %s (asked for %s)", device, choice)
    return device


_READS = frozenset(
    {
        "tolist",
        "item",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "equal",
        "nonzero",
        "numpy",
        "cpu",
    }
)
"""Tensor operations that bring a value to the host: on a GPU, each waits for the device to
finish everything queued before it (``nonzero``: its output's size is such a value)."""


class HostReads(TorchFunctionMode):
    """Counts the reads of tensor values to the host (:data:`_READS`) made inside it, by
    name, on any device: how a batched step's cost on a GPU is judged on a CPU.

    >>> with HostReads() as reads:
    ...     bool(torch.ones(1) > 0)
    True
    >>> reads.total
    1
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _READS:
            self.by_name[name] += 1
        return func(*args, **(kwargs or {}))
