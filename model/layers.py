"""Small building blocks shared by the compressor and both decoders."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head attention on batch-first tokens through ``scaled_dot_product_attention``.

    ``mask`` is boolean, True where a query may attend a key, broadcastable to
    (b, heads, q, k). Positional embeddings are added by the caller to queries and keys only.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        split = "b t (h c) -> b h t c"
        out = F.scaled_dot_product_attention(
            rearrange(self.q_proj(q), split, h=self.heads),
            rearrange(self.k_proj(k), split, h=self.heads),
            rearrange(self.v_proj(v), split, h=self.heads),
            attn_mask=mask,
        )
        return self.out_proj(rearrange(out, "b h t c -> b t (h c)"))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm, never BatchNorm: a stream's features must not depend on its batch mates."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class MLP(nn.Sequential):
    """Mask2Former's mask-embedding head: ``layers`` linear layers with ReLU between."""

    def __init__(self, dim: int, out: int, layers: int) -> None:
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dim, out if i == layers - 1 else dim))
            if i < layers - 1:
                mods.append(nn.ReLU())
        super().__init__(*mods)


def sine_position_embedding(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """DETR's fixed 2-D sine embedding, (h*w, dim): half the channels for y, half for x."""
    if dim % 4:
        raise ValueError(f"sine position embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    freqs = temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    py = ys[:, None] / freqs  # (h, quarter)
    px = xs[:, None] / freqs  # (w, quarter)
    ey = torch.cat([py.sin(), py.cos()], dim=-1)[:, None, :].expand(h, w, 2 * quarter)
    ex = torch.cat([px.sin(), px.cos()], dim=-1)[None, :, :].expand(h, w, 2 * quarter)
    return torch.cat([ey, ex], dim=-1).reshape(h * w, dim)


class DecoderLayer(nn.Module):
    """Pre-norm cross-attention -> self-attention -> FFN, shared by both decoders.

    ``cross_mask`` restricts which keys each query sees (Mask2Former's masked attention);
    ``self_mask`` hides padded queries (inactive ID slots) from the others.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim)

    def forward(
        self,
        queries: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        cross_mask: Tensor | None = None,
        self_mask: Tensor | None = None,
    ) -> Tensor:
        h = self.norm_cross(queries)
        queries = queries + self.cross_attn(h + query_pos, memory + memory_pos, memory, cross_mask)
        h = self.norm_self(queries)
        queries = queries + self.self_attn(h + query_pos, h + query_pos, h, self_mask)
        return queries + self.ffn(self.norm_ffn(queries))
