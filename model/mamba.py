"""A Mamba (S6) layer with a whole-sequence forward and a one-step recurrence on the same weights.

Names follow the paper and mamba_ssm (``A_log``, ``dt_proj``, ``d_state``). The recurrent
state is explicit and functional: :meth:`Mamba.forward` and :meth:`Mamba.step` take a
:class:`MambaState` and return the next one, so callers decide where states live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ausm_stream.model.scan import (
    resolve_backend,
    selective_scan,
    selective_scan_cuda,
    selective_state_update,
    selective_state_update_cuda,
)


@dataclass
class MambaState:
    """Per-sequence recurrent memory: the last ``d_conv`` conv inputs and the SSM state."""

    conv: Tensor  # (b, d_inner, d_conv)
    ssm: Tensor  # (b, d_inner, d_state)


class Mamba(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        scan_backend: str = "auto",
        scan_chunk: int = 64,
    ) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.dt_rank = math.ceil(d_model / 16)
        self.scan_backend = scan_backend
        self.scan_chunk = scan_chunk

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # dt starts log-uniform in [dt_min, dt_max]; the bias holds softplus^-1(dt).
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation; A_log stays in fp32 whatever the module dtype.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def init_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> MambaState:
        return MambaState(
            conv=torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
            ssm=torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype),
        )

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """delta (pre-softplus), B, C from the conv output x (b, d_inner, l)."""
        x_dbl = self.x_proj(rearrange(x, "b d l -> b l d"))
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = rearrange(dt @ self.dt_proj.weight.T, "b l d -> b d l")
        return delta, rearrange(B, "b l n -> b n l"), rearrange(C, "b l n -> b n l")

    def _causal_conv(self, x_ctx: Tensor, length: int) -> Tensor:
        """The depthwise conv over time as shifted multiply-adds (b, d, length + w - 1) ->
        (b, d, length): same sums as ``conv1d``, but its CPU backward for grouped convs
        costs 2.5x this one's. The streaming step uses it too (length 1), so both paths
        add in the same order."""
        weight = rearrange(self.conv1d.weight, "d 1 w -> d w")
        y = x_ctx[..., :length] * weight[:, :1]
        for k in range(1, self.d_conv):
            y = torch.addcmul(y, x_ctx[..., k : k + length], weight[:, k : k + 1])
        return y + self.conv1d.bias.unsqueeze(-1)

    def forward(self, u: Tensor, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        """Whole sequence: u (b, l, d_model) -> (y (b, l, d_model), state after the last step).

        With ``state`` the sequence continues one that stopped there (chunked inference).
        """
        length = u.shape[1]
        xz = rearrange(self.in_proj(u), "b l d -> b d l")
        x, z = xz.chunk(2, dim=1)
        from_zero = state is None  # what mamba_ssm's fused scan supports
        if state is None:
            state = self.init_state(u.shape[0], u.device, u.dtype)
        # The conv sees the previous d_conv - 1 inputs as left context.
        x_ctx = torch.cat([state.conv[..., 1:], x], dim=-1)
        new_conv = x_ctx[..., -self.d_conv :]
        x = F.silu(self._causal_conv(x_ctx, length))
        delta, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        if resolve_backend(self.scan_backend, u.device, carried_state=not from_zero) == "mamba_ssm":
            y, ssm = selective_scan_cuda(
                x, delta, A, B, C, self.D.float(), z, self.dt_proj.bias.float()
            )
        else:
            y, ssm = selective_scan(
                x,
                delta,
                A,
                B,
                C,
                self.D.float(),
                z,
                delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True,
                initial_state=state.ssm,
                chunk=self.scan_chunk,
            )
        out = self.out_proj(rearrange(y, "b d l -> b l d"))
        return out, MambaState(conv=new_conv, ssm=ssm)

    def step(self, u: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One time step: u (b, d_model) -> (y (b, d_model), next state).

        The recurrent update runs over blocks of ``STEP_BLOCK`` sequences: for many streams
        the state is tens of MB, and block by block each intermediate stays in cache instead
        of streaming through memory several times (rows are independent, so blocking does
        not change a single bit of the result).
        """
        x, z = self.in_proj(u).chunk(2, dim=-1)
        A = -torch.exp(self.A_log.float())
        update = (
            selective_state_update_cuda
            if resolve_backend(self.scan_backend, u.device) == "mamba_ssm"
            else selective_state_update
        )
        ys, convs, ssms = [], [], []
        for rows in _blocks(u.shape[0], STEP_BLOCK):
            conv = torch.cat([state.conv[rows, :, 1:], x[rows].unsqueeze(-1)], dim=-1)
            xb = F.silu(self._causal_conv(conv, 1).squeeze(-1))
            delta, B, C = self._ssm_inputs(xb.unsqueeze(-1))
            y, ssm = update(
                state.ssm[rows],
                xb,
                delta.squeeze(-1),
                A,
                B.squeeze(-1),
                C.squeeze(-1),
                self.D.float(),
                z[rows],
                delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True,
            )
            ys.append(y)
            convs.append(conv)
            ssms.append(ssm)
        return self.out_proj(_join(ys)), MambaState(conv=_join(convs), ssm=_join(ssms))


STEP_BLOCK = 256
"""Sequences per block of the streaming update (one 128-pixel frame's 1/8 grid)."""


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _join(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)
