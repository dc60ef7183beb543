"""Selective scan (Mamba's S6 recurrence) in plain PyTorch, with an explicit CUDA-kernel choice.

The recurrence, per channel d and state index n::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = C_t . h_t + D * u_t            (then gated by silu(z_t) when z is given)

Three implementations share one set of parameters:

- :func:`selective_scan` runs a whole sequence at once (every projection for all steps
  together, then the scan over time) inside chunks of ``chunk`` steps, carrying the state
  from chunk to chunk, so memory is bounded on long clips and a sequence can be continued
  from a stored state (chunked inference that carries state). On a GPU the scan is
  associative (Hillis-Steele, log depth); on a CPU, where it is memory-bound and log depth
  buys nothing, it is one fused loop over time with a hand-written backward.
- :func:`selective_state_update` advances one time step: the streaming path.
- :func:`selective_scan_ref` is the naive loop, kept beside the fast paths for tests.

Tensor layout follows mamba_ssm so the kernels drop in: ``u, delta, z: (b, d, l)``,
``A: (d, n)``, ``B, C: (b, n, l)``, ``D: (d,)``, state ``(b, d, n)``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from ausm_stream.errors import InvalidInputError

log = logging.getLogger(__name__)

_logged_backends: set[str] = set()


@functools.cache
def mamba_ssm_problem() -> str | None:
    """Why mamba-ssm's kernels cannot be used here, or None when both import. Importing them
    (not only finding the package) catches a build made for another torch or CUDA, which
    would otherwise be chosen by ``auto`` and fail at its first call."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return "mamba-ssm is not installed (pip install 'ausm-stream[cuda]')"
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        importlib.import_module("mamba_ssm.ops.triton.selective_state_update")
    except Exception as exc:  # a broken build raises ImportError, OSError or worse
        return f"mamba-ssm is installed but its kernels do not import ({exc})"
    return None


def mamba_ssm_available() -> bool:
    return mamba_ssm_problem() is None


def resolve_backend(choice: str, device: torch.device, carried_state: bool = False) -> str:
    """Pick the scan implementation explicitly and log each choice once per process.

    ``auto`` takes the mamba_ssm kernels for CUDA tensors when the package imports, else
    ours; ``mamba_ssm`` demands them, and without them fails loudly; ``torch`` is always
    ours (the reference). mamba_ssm's fused whole-sequence scan starts from a zero state, so
    a sequence that continues a carried state (``carried_state``: chunked inference) runs our
    scan under either choice, and the log says so.
    """
    if choice == "torch":
        backend, why = "torch", "asked for"
    elif choice == "mamba_ssm":
        if device.type != "cuda" or not mamba_ssm_available():
            raise InvalidInputError(
                "scan_backend='mamba_ssm' needs CUDA tensors and the mamba-ssm package "
                f"(pip install 'ausm-stream[cuda]'; here: {mamba_ssm_problem() or 'no CUDA'}); "
                "use scan_backend='auto' or 'torch'"
            )
        backend, why = "mamba_ssm", "asked for"
    elif device.type != "cuda":
        backend, why = "torch", f"tensors on {device.type}"
    elif not mamba_ssm_available():
        backend, why = "torch", str(mamba_ssm_problem())
    else:
        backend, why = "mamba_ssm", "CUDA tensors and mamba-ssm installed"
    if backend == "mamba_ssm" and carried_state:
        backend, why = "torch", "a carried state (the fused scan starts from zero)"
    key = f"{backend}:{why}"
    if key not in _logged_backends:
        _logged_backends.add(key)
        log.info("selective scan: %s (scan_backend=%s; %s)", backend, choice, why)
    return backend


def _discretise(u: Tensor, delta: Tensor, A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """Per-step decay exp(delta*A) and input delta*B*u, both (b, l, d, n)."""
    delta_t = delta.transpose(1, 2).unsqueeze(-1)  # (b, l, d, 1)
    decay = torch.exp(delta_t * A)  # (b, l, d, n)
    drive = delta_t * u.transpose(1, 2).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)
    return decay, drive


def _gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y + D*u, gated by silu(z); all (b, d, l)."""
    if D is not None:
        y = y + D.unsqueeze(-1) * u
    if z is not None:
        y = y * F.silu(z)
    return y


def _prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    if delta_bias is not None:
        delta = delta + delta_bias.unsqueeze(-1)
    return F.softplus(delta) if delta_softplus else delta


def _start(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    initial_state: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The prepared step sizes and the state to start from (zeros unless given)."""
    b, d, _ = u.shape
    h = initial_state if initial_state is not None else u.new_zeros(b, d, A.shape[1])
    return _prepare_delta(delta, delta_bias, delta_softplus), h


def _associative_scan(decay: Tensor, drive: Tensor, h0: Tensor) -> Tensor:
    """Inclusive scan of h_t = decay_t * h_{t-1} + drive_t along dim 1 from h_{-1} = h0, in
    log2(l) steps.

    Hillis-Steele: after the step with offset k, element t holds the composition of steps
    t-2k+1..t. Runs without an autograd graph; :class:`_LinearScan` supplies the gradient.
    Log depth pays on a GPU; it does O(l log l) work over the whole (b, l, d, n) tensor.
    """
    decay, drive = decay.clone(), drive.clone()
    drive[:, 0] += decay[:, 0] * h0
    length = decay.shape[1]
    offset = 1
    while offset < length:
        carry = decay[:, offset:] * drive[:, :-offset]
        decay_prev = decay[:, :-offset].clone()
        drive[:, offset:] += carry
        decay[:, offset:] *= decay_prev
        offset *= 2
    return drive


class _LinearScan(torch.autograd.Function):
    """h_t = a_t * h_{t-1} + b_t over dim 1 from h_{-1} = h0, both directions log-depth scans.

    The GPU path without mamba_ssm. The gradient of a linear recurrence is the same
    recurrence run backwards in time: g_t = dL/dh_t + a_{t+1} g_{t+1}; then dL/db_t = g_t,
    dL/da_t = g_t h_{t-1} and dL/dh0 = a_0 g_0. Doing it by hand avoids autograd's
    per-slice buffers.
    """

    @staticmethod
    def forward(ctx, decay: Tensor, drive: Tensor, h0: Tensor) -> Tensor:
        hs = _associative_scan(decay, drive, h0)
        ctx.save_for_backward(decay, hs, h0)
        return hs

    @staticmethod
    def backward(ctx, grad_hs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        decay, hs, h0 = ctx.saved_tensors
        next_decay = torch.cat([decay[:, 1:], torch.zeros_like(decay[:, :1])], dim=1)
        zero = torch.zeros_like(grad_hs[:, 0])
        g = _associative_scan(next_decay.flip(1), grad_hs.flip(1), zero).flip(1)
        grad_decay = torch.empty_like(g)
        torch.mul(g[:, 0], h0, out=grad_decay[:, 0])
        torch.mul(g[:, 1:], hs[:, :-1], out=grad_decay[:, 1:])
        return grad_decay, g, g[:, 0] * decay[:, 0]


class _SelectiveScanCPU(torch.autograd.Function):
    """The whole S6 scan as one loop over time, forward and backward written by hand.

    On a CPU the scan is memory-bound. Built from whole-sequence tensor ops it materialises
    several (b, l, d, n) tensors (the input drive, the readout's operands and the gradients
    of each), every one streamed through memory by each op. Here a step's (b, d, n) slices
    are made and used at once; only the states and decays are kept for backward. With the
    shifted-add conv of :mod:`mamba`, a Mamba layer's forward + backward costs 0.6x what it
    did. The gradient of the linear recurrence is the same recurrence run backwards:
    g_t = dL/dh_t + decay_{t+1} g_{t+1}.

    Takes the prepared step sizes; returns (C.h per step (b, d, l), last state (b, d, n)).
    """

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor):
        u_t, delta_t, B_t, C_t = (x.permute(2, 0, 1).contiguous() for x in (u, delta, B, C))
        drive_in = delta_t * u_t  # (l, b, d)
        length, b, d = u_t.shape
        hs = u.new_empty(length, b, d, A.shape[1])
        decays = torch.empty_like(hs)
        ys = u.new_empty(length, b, d)
        h = h0
        for t in range(length):
            decay = torch.exp(delta_t[t].unsqueeze(-1) * A, out=decays[t])
            h = torch.addcmul(decay * h, drive_in[t].unsqueeze(-1), B_t[t].unsqueeze(1), out=hs[t])
            torch.bmm(h, C_t[t].unsqueeze(-1), out=ys[t].unsqueeze(-1))
        ctx.save_for_backward(u_t, delta_t, A, B_t, C_t, h0, hs, decays)
        return ys.permute(1, 2, 0), hs[-1].clone()

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_last: Tensor):
        u_t, delta_t, A, B_t, C_t, h0, hs, decays = ctx.saved_tensors
        gy = grad_y.permute(2, 0, 1).contiguous()  # (l, b, d)
        g_drive_in = torch.empty_like(u_t)
        g_delta = torch.empty_like(u_t)
        g_B = torch.empty_like(B_t)
        g_C = torch.empty_like(C_t)
        g_A = torch.zeros_like(hs[0])  # summed over the batch at the end
        carry = grad_last
        for t in range(u_t.shape[0] - 1, -1, -1):
            g = torch.addcmul(carry, gy[t].unsqueeze(-1), C_t[t].unsqueeze(1))  # dL/dh_t
            torch.bmm(gy[t].unsqueeze(1), hs[t], out=g_C[t].unsqueeze(1))
            g_arg = (g * (hs[t - 1] if t else h0)).mul_(decays[t])  # dL/d(delta_t * A)
            torch.sum(g_arg * A, dim=-1, out=g_delta[t])
            g_A.addcmul_(g_arg, delta_t[t].unsqueeze(-1))
            torch.bmm(g, B_t[t].unsqueeze(-1), out=g_drive_in[t].unsqueeze(-1))
            torch.bmm((delta_t[t] * u_t[t]).unsqueeze(1), g, out=g_B[t].unsqueeze(1))
            carry = g.mul_(decays[t])
        g_delta.addcmul_(g_drive_in, u_t)
        g_u = g_drive_in.mul_(delta_t)

        def back(x: Tensor) -> Tensor:
            return x.permute(1, 2, 0)

        return back(g_u), back(g_delta), g_A.sum(0), back(g_B), back(g_C), carry


def linear_scan(decay: Tensor, drive: Tensor, h0: Tensor) -> Tensor:
    """Differentiable scan of h_t = decay_t * h_{t-1} + drive_t along dim 1 from h0."""
    return _LinearScan.apply(decay, drive, h0)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    chunk: int = 64,
) -> tuple[Tensor, Tensor]:
    """Whole-sequence scan; returns ``(y (b, d, l), final_state (b, d, n))``."""
    delta, h = _start(u, delta, A, delta_bias, delta_softplus, initial_state)
    length = u.shape[-1]
    outputs = []
    for start in range(0, length, chunk):

        def part(x: Tensor, start: int = start) -> Tensor:
            # A one-chunk sequence is used as it is: a slice would cost a buffer in backward.
            return x if length <= chunk else x[..., start : start + chunk]

        if u.is_cuda:
            decay, drive = _discretise(part(u), part(delta), A, part(B))
            hs = linear_scan(decay, drive, h)  # (b, l, d, n), continuing from the carried state
            y, h = torch.einsum("bldn,bnl->bdl", hs, part(C)), hs[:, -1]
        else:
            y, h = _SelectiveScanCPU.apply(part(u), part(delta), A, part(B), part(C), h)
        outputs.append(_gate(y, part(u), D, None if z is None else part(z)))
    return _cat_time(outputs), h


def _cat_time(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The recurrence as a plain loop over time: the reference the fast paths are tested against."""
    delta, h = _start(u, delta, A, delta_bias, delta_softplus, initial_state)
    length = u.shape[-1]
    decay, drive = _discretise(u, delta, A, B)
    hs = []
    for t in range(length):
        h = decay[:, t] * h + drive[:, t]
        hs.append(h)
    y = torch.einsum("bldn,bnl->bdl", torch.stack(hs, dim=1), C)
    return _gate(y, u, D, z), h


def selective_state_update(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> tuple[Tensor, Tensor]:
    """One streaming step. ``u, delta, z: (b, d)``, ``B, C: (b, n)``; returns (y (b, d), state).

    Written for memory traffic: the state (b, d, n) is the big tensor, so it is read once
    and written once (exp(delta*A) * h + (delta*u) B in three fused-ish passes).
    """
    delta = _prepare_delta(delta.unsqueeze(-1), delta_bias, delta_softplus).squeeze(-1)
    decay = torch.exp(delta.unsqueeze(-1) * A)  # (b, d, n)
    h = torch.addcmul(decay * state, (delta * u).unsqueeze(-1), B.unsqueeze(1))
    y = torch.bmm(h, C.unsqueeze(-1)).squeeze(-1)
    if D is not None:
        y = y + D * u
    if z is not None:
        y = y * F.silu(z)
    return y, h


def selective_scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor,
    delta_bias: Tensor,
) -> tuple[Tensor, Tensor]:
    """mamba_ssm's fused whole-sequence scan from a zero state (CUDA only; compared with
    :func:`selective_scan` by the CUDA-marked tests). Same arguments and results as
    :func:`selective_scan` with ``delta_softplus=True``."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    y, last = selective_scan_fn(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus=True, return_last_state=True
    )
    return y, last


def selective_state_update_cuda(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> tuple[Tensor, Tensor]:
    """mamba_ssm's one-step kernel (Triton, CUDA only), with :func:`selective_state_update`'s
    arguments and results. The kernel updates the state in place; ours is functional, so it
    updates a copy (the caller's state stays as it was)."""
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update as kernel

    h = state.float().clone()
    y = kernel(h, u, delta, A, B, C, D=D, z=z, dt_bias=delta_bias, dt_softplus=delta_softplus)
    return y, h
