"""History Compressor (MODEL.md section 3.2): temporal Mamba per pixel, then spatial attention.

Every pixel of the 1/8 grid is its own sequence over time. The whole past lives in the
per-layer, per-pixel Mamba states, so the memory is the same after 10 frames or 10 million.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.layers import Attention, FeedForward
from ausm_stream.model.mamba import Mamba, MambaState


class CompressorLayer(nn.Module):
    def __init__(self, cfg: AUSMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_time = nn.LayerNorm(d)
        self.mamba = Mamba(
            d,
            cfg.d_state,
            cfg.d_conv,
            cfg.expand,
            scan_backend=cfg.scan_backend,
            scan_chunk=cfg.scan_chunk,
        )
        self.norm_space = nn.LayerNorm(d)
        self.attn = Attention(d, cfg.n_heads)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = FeedForward(d, cfg.ffn_dim)

    def _spatial(self, x: Tensor, pos: Tensor) -> Tensor:
        h = self.norm_space(x)
        x = x + self.attn(h + pos, h + pos, h)
        return x + self.ffn(self.norm_ffn(x))

    def forward(
        self, x: Tensor, pos: Tensor, state: MambaState | None
    ) -> tuple[Tensor, MambaState]:
        """x (b, t, n, D) over all t at once."""
        b = x.shape[0]
        y, state = self.mamba(rearrange(self.norm_time(x), "b t n d -> (b n) t d"), state)
        x = x + rearrange(y, "(b n) t d -> b t n d", b=b)
        frames = self._spatial(rearrange(x, "b t n d -> (b t) n d"), pos)
        return rearrange(frames, "(b t) n d -> b t n d", b=b), state

    def step(self, x: Tensor, pos: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """x (b, n, D) for one frame."""
        b = x.shape[0]
        y, state = self.mamba.step(rearrange(self.norm_time(x), "b n d -> (b n) d"), state)
        x = x + rearrange(y, "(b n) d -> b n d", b=b)
        return self._spatial(x, pos), state


class HistoryCompressor(nn.Module):
    def __init__(self, cfg: AUSMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CompressorLayer(cfg) for _ in range(cfg.compressor_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(
        self, x: Tensor, pos: Tensor, states: list[MambaState] | None = None
    ) -> tuple[Tensor, list[MambaState]]:
        """Parallel over time: x (b, t, n, D); ``states`` continue an earlier sequence."""
        out_states = []
        for i, layer in enumerate(self.layers):
            x, s = layer(x, pos, None if states is None else states[i])
            out_states.append(s)
        return self.norm(x), out_states

    def step(
        self, x: Tensor, pos: Tensor, states: list[MambaState]
    ) -> tuple[Tensor, list[MambaState]]:
        """One frame: x (b, n, D); returns F_t and the next states."""
        out_states = []
        for layer, s in zip(self.layers, states, strict=True):
            x, s = layer.step(x, pos, s)
            out_states.append(s)
        return self.norm(x), out_states
