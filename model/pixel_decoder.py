"""Pixel Decoder (MODEL.md section 3.4): Mask2Former-style masked-attention query decoder.

Queries are the N_id ID slots (tracking) followed by the N_det detection queries. Mask logits
are dot products of query embeddings with per-pixel embeddings at 1/4 of the input, made by a
light FPN step that fuses the upsampled history-decoded features G_t with the backbone's
1/4-resolution features, so boundaries are not blocky.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.layers import MLP, DecoderLayer, group_norm


@dataclass
class QueryPredictions:
    """Per-query class logits (b, Q, C + 1; last = no object) and mask logits (b, Q, h4, w4)."""

    class_logits: Tensor
    mask_logits: Tensor


@dataclass
class SlotBias:
    """What another cue adds to the ID slots' outputs: mask logits (b, N_id, h4, w4) and
    no-object logits (b, N_id)."""

    mask: Tensor
    no_object: Tensor


class PixelDecoder(nn.Module):
    def __init__(self, cfg: AUSMConfig, channels_4: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.lateral = nn.Conv2d(channels_4, d, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(d, d, 3, padding=1, bias=False), group_norm(d), nn.GELU()
        )
        self.mask_proj = nn.Conv2d(d, d, 1)
        self.layers = nn.ModuleList(
            DecoderLayer(d, cfg.n_heads, cfg.ffn_dim) for _ in range(cfg.pixel_decoder_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.class_head = nn.Linear(d, cfg.num_classes + 1)
        self.mask_head = MLP(d, d, 3)

    def mask_features(self, g_grid: Tensor, feats_4: Tensor) -> Tensor:
        """G_t on the 1/8 grid (b, D, h8, w8) + backbone 1/4 features -> (b, D, h4, w4)."""
        up = F.interpolate(g_grid, size=feats_4.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_proj(self.fuse(up + self.lateral(feats_4)))

    def predict(
        self, queries: Tensor, mask_features: Tensor, slot_bias: SlotBias | None = None
    ) -> QueryPredictions:
        h = self.norm(queries)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_head(h), mask_features)
        logits = self.class_head(h)
        if slot_bias is not None:
            n_id = slot_bias.mask.shape[1]
            masks = torch.cat([masks[:, :n_id] + slot_bias.mask, masks[:, n_id:]], dim=1)
            no_object = logits[:, :n_id, -1:] + slot_bias.no_object[..., None]
            logits = torch.cat(
                [torch.cat([logits[:, :n_id, :-1], no_object], dim=2), logits[:, n_id:]], dim=1
            )
        return QueryPredictions(logits, masks)

    @staticmethod
    def attention_mask(mask_logits: Tensor) -> Tensor:
        """Masked attention: each query sees the 1/8 cells its current mask covers.

        A query whose mask is empty sees every cell (as in Mask2Former), so no row is all
        masked. Returns (b, 1, Q, h8*w8) bool, True = may attend.
        """
        allowed = (F.avg_pool2d(mask_logits.detach(), 2) >= 0).flatten(2)
        allowed = allowed | ~allowed.any(-1, keepdim=True)
        return allowed.unsqueeze(1)

    def forward(
        self,
        queries: Tensor,
        query_pos: Tensor,
        query_valid: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        mask_features: Tensor,
        track_prior: Tensor | None = None,
        slot_bias: SlotBias | None = None,
    ) -> list[QueryPredictions]:
        """Predictions before the first layer and after each one (deep supervision).

        ``track_prior`` (b, N_id, h8*w8) bool, when given, replaces the first layer's
        attention mask of the ID-slot queries: each tracking query first looks where its
        object was (its history mask, dilated by one cell) instead of where its untrained
        initial guess points. An empty prior (a hidden object) sees everything.
        ``slot_bias``, when given, is added to the ID slots' predictions at every stage, so
        the masked attention of each layer already sees it.
        """
        self_mask = query_valid[:, None, None, :]
        stages = [self.predict(queries, mask_features, slot_bias)]
        for i, layer in enumerate(self.layers):
            cross_mask = self.attention_mask(stages[-1].mask_logits)
            if i == 0 and track_prior is not None:
                n_id = track_prior.shape[1]
                prior = track_prior | ~track_prior.any(-1, keepdim=True)
                cross_mask = torch.cat([prior.unsqueeze(1), cross_mask[:, :, n_id:]], dim=2)
            queries = layer(queries, query_pos, memory, memory_pos, cross_mask, self_mask)
            stages.append(self.predict(queries, mask_features, slot_bias))
        return stages
