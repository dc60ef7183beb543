"""The AUSM network (MODEL.md section 4): pure tensors in, tensors out, no bookkeeping.

Two entry points share every weight:

- :meth:`AUSMNet.forward_parallel` runs all T frames of a clip at once with given
  (teacher-forced) history masks: the training path.
- :meth:`AUSMNet.step` runs one frame per stream for a batch of streams, carrying the
  recurrent tensors explicitly: the serving path.

Both compute, per frame t::

    E_t = X_{t-1} + HistoryMarker(A_{t-1}, M_{t-1})
    F_t = HistoryCompressor(E_<=t)
    G_t = HistoryDecoder(query=X_t, memory=F_t)
    preds = PixelDecoder(queries=[ID slots..., detection queries...], memory=G_t)

With ``cfg.memory_frames`` (ours), the ID slots' masks propagated from a memory of frames,
P_t (model/memory.py), are also painted onto the history decoder's X_t and added to the ID
slots' predictions (:class:`PropagationReadout`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ausm_stream.model.backbone import build_backbone
from ausm_stream.model.compressor import HistoryCompressor
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.layers import DecoderLayer, sine_position_embedding
from ausm_stream.model.mamba import MambaState
from ausm_stream.model.marker import HistoryMarker, masks_to_grid
from ausm_stream.model.memory import Memory, clip_memory, propagate
from ausm_stream.model.pixel_decoder import PixelDecoder, QueryPredictions, SlotBias


@dataclass
class NetOutputs:
    """Final predictions plus the earlier decoder stages (for deep supervision)."""

    class_logits: Tensor  # (..., Q, C + 1)
    mask_logits: Tensor  # (..., Q, h4, w4)
    aux: list[QueryPredictions]
    look_features: Tensor | None = None  # (b, C_look, h8, w8), streaming step only
    propagated: Tensor | None = None  # (b, N_id, h8, w8): P_t, streaming step with a memory


@dataclass
class RecurrentTensors:
    """What one step hands to the next, batched over streams."""

    x_prev: Tensor  # (b, D, h8, w8): X_{t-1}
    mamba: list[MambaState]  # per compressor layer, batch (b * h8 * w8)


def frame_by_frame(fn: Callable[..., tuple[Tensor, ...]], *batched: Tensor) -> tuple[Tensor, ...]:
    """Apply ``fn`` to one sample at a time and concatenate its outputs.

    Used for the convolutions of the streaming path: oneDNN picks conv algorithms by batch
    shape, so a batched conv would make a stream's output depend on its batch mates (~1e-5,
    amplified by masked attention's thresholds). Frame by frame, a replay that batches
    streams differently is bit-identical, which recovery relies on. The convs are a small
    part of a step, so this costs little.
    """
    outs = [fn(*(t[i : i + 1] for t in batched)) for i in range(batched[0].shape[0])]
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))


class PropagationReadout(nn.Module):
    """How the network reads the propagated masks P_t (b, N_id, h8, w8) of its ID slots.

    Three learnt gains: P painted with the slots' ID vectors onto X_t before the history
    decoder (so the queries attend where the memory puts each object; starts at 0, as an
    untrained painting would only disturb), logit(P) added to the slots' mask logits, and
    logit(max P) taken from their no-object logits (a slot whose object the memory finds
    is shown). The last two start at 2 and 1, the best of a few pairs for the stage-2
    network on ``vos-dev`` before the readout was trained.
    """

    EPS = 1e-3

    def __init__(self) -> None:
        super().__init__()
        self.paint_gain = nn.Parameter(torch.zeros(()))
        self.mask_gain = nn.Parameter(torch.full((), 2.0))
        self.presence_gain = nn.Parameter(torch.ones(()))

    def paint(self, id_vectors: Tensor, slot_active: Tensor, propagated: Tensor) -> Tensor:
        """(b, D, h8, w8): each slot's ID vector weighted by its propagated mask."""
        weights = propagated * slot_active[..., None, None].to(propagated.dtype)
        return self.paint_gain * torch.einsum("bkhw,kd->bdhw", weights, id_vectors)

    def bias(self, propagated: Tensor, mask_size: tuple[int, int]) -> SlotBias:
        up = F.interpolate(propagated, size=mask_size, mode="bilinear", align_corners=False)
        presence = propagated.flatten(2).amax(-1)
        return SlotBias(
            mask=self.mask_gain * torch.logit(up.clamp(self.EPS, 1 - self.EPS)),
            no_object=-self.presence_gain * torch.logit(presence.clamp(self.EPS, 1 - self.EPS)),
        )


class AUSMNet(nn.Module):
    def __init__(self, cfg: AUSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.backbone = build_backbone(cfg)
        self.x_init = nn.Parameter(torch.zeros(d))  # X_0: the "frame" before the first one
        self.id_vectors = nn.Parameter(torch.randn(cfg.n_id, d))  # ID buffer B
        self.det_queries = nn.Parameter(torch.randn(cfg.n_det, d))  # V
        self.det_pos = nn.Parameter(torch.randn(cfg.n_det, d))
        self.track_pos = nn.Parameter(torch.randn(d))
        self.marker = HistoryMarker(cfg.marker_eps)
        self.compressor = HistoryCompressor(cfg)
        self.history_decoder = nn.ModuleList(
            DecoderLayer(d, cfg.n_heads, cfg.ffn_dim) for _ in range(cfg.history_decoder_layers)
        )
        self.history_norm = nn.LayerNorm(d)
        self.pixel_decoder = PixelDecoder(cfg, self.backbone.channels_4)
        self.readout = PropagationReadout() if cfg.memory_frames else None
        self.register_buffer("pos", sine_position_embedding(*cfg.grid_size, d), persistent=False)
        self.register_buffer(
            "pos_history", sine_position_embedding(*cfg.history_grid_size, d), persistent=False
        )

    # -- shared pieces ---------------------------------------------------------------------
    def _decode(
        self,
        x: Tensor,
        f: Tensor,
        feats_4: Tensor,
        slot_active: Tensor,
        grid_masks: Tensor,
        batch_invariant: bool = False,
        propagated: Tensor | None = None,
    ) -> NetOutputs:
        """History Decoder + Pixel Decoder for a batch of frames (b, D, h8, w8); ``f`` is F_t
        as tokens of the history grid; ``propagated`` is P_t when the model keeps a memory."""
        b = x.shape[0]
        slot_bias = None
        if propagated is not None:
            x = x + self.readout.paint(self.id_vectors, slot_active, propagated)
            slot_bias = self.readout.bias(propagated, feats_4.shape[-2:])
        xh = self._to_history_grid(x)
        g = rearrange(xh, "b d h w -> b (h w) d")
        for layer in self.history_decoder:
            g = layer(g, self.pos_history, f, self.pos_history)
        g = self.history_norm(g)
        g_grid = rearrange(g, "b (h w) d -> b d h w", h=xh.shape[2], w=xh.shape[3])
        if self.cfg.history_stride != 8:  # back onto X_t's finer grid, X_t keeping its detail
            g_grid = x + F.interpolate(
                g_grid, size=x.shape[2:], mode="bilinear", align_corners=False
            )
            g = rearrange(g_grid, "b d h w -> b (h w) d")
        if batch_invariant:
            (mask_features,) = frame_by_frame(
                lambda gg, ff: (self.pixel_decoder.mask_features(gg, ff),), g_grid, feats_4
            )
        else:
            mask_features = self.pixel_decoder.mask_features(g_grid, feats_4)
        cfg = self.cfg
        queries = torch.cat([self.id_vectors, self.det_queries]).expand(b, -1, -1)
        query_pos = torch.cat([self.track_pos.expand(cfg.n_id, -1), self.det_pos]).unsqueeze(0)
        valid = torch.cat([slot_active, slot_active.new_ones(b, cfg.n_det)], dim=1)
        prior = None
        if cfg.track_prior:
            dilated = F.max_pool2d(grid_masks, 3, stride=1, padding=1) > 0
            if propagated is not None:  # and where the memory puts the object now
                dilated = dilated | (F.max_pool2d(propagated, 3, stride=1, padding=1) > 0.5)
            prior = dilated.flatten(2) & slot_active[..., None]
        stages = self.pixel_decoder(
            queries, query_pos, valid, g, self.pos, mask_features, prior, slot_bias
        )
        return NetOutputs(stages[-1].class_logits, stages[-1].mask_logits, stages[:-1])

    def _to_history_grid(self, grid: Tensor) -> Tensor:
        """(b, D, h8, w8) -> the history grid (``cfg.history_stride``), area-averaged."""
        factor = self.cfg.history_stride // 8
        return F.avg_pool2d(grid, factor) if factor > 1 else grid

    def _propagate(self, look: Tensor, memory: Memory | None) -> Tensor | None:
        """P_t from the memory (no gradient: the look features are frozen, the labels data)."""
        if self.readout is None:
            return None
        if memory is None:
            raise ValueError("this model keeps a propagation memory: step() needs memory=")
        with torch.no_grad():
            return propagate(look, memory, self.cfg.memory_topk, self.cfg.memory_temperature)

    def _history(self, x_prev: Tensor, slot_active: Tensor, grid_masks: Tensor) -> Tensor:
        """E = X_{t-1} + marker, painted at 1/8, as tokens of the history grid (b, n, D)."""
        e = x_prev + self.marker(self.id_vectors, slot_active, grid_masks)
        return rearrange(self._to_history_grid(e), "b d h w -> b (h w) d")

    # -- entry points ----------------------------------------------------------------------
    def initial_recurrent(self, batch: int) -> RecurrentTensors:
        h, w = self.cfg.grid_size
        x0 = self.x_init.view(1, -1, 1, 1).expand(batch, -1, h, w).clone()
        hh, hw = self.cfg.history_grid_size
        states = [
            layer.mamba.init_state(batch * hh * hw, x0.device) for layer in self.compressor.layers
        ]
        return RecurrentTensors(x0, states)

    def step(
        self,
        frames: Tensor,
        slot_active: Tensor,
        grid_masks: Tensor,
        recurrent: RecurrentTensors,
        batch_invariant: bool = True,
        memory: Memory | None = None,
    ) -> tuple[NetOutputs, RecurrentTensors]:
        """One frame for each of b streams.

        frames (b, H, W, 3) uint8; slot_active (b, N_id) bool and grid_masks (b, N_id, h8, w8)
        are A_{t-1} and M_{t-1} on the 1/8 grid. ``batch_invariant`` (serving) runs the
        convolutions frame by frame so outputs do not depend on batch mates; iterative
        training turns it off. ``memory``: the streams' propagation memories, when the
        model keeps them (``cfg.memory_frames``).
        """

        def backbone(fr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return self.backbone(self.backbone.normalise(fr))

        feats_4, x, look = frame_by_frame(backbone, frames) if batch_invariant else backbone(frames)
        e = self._history(recurrent.x_prev, slot_active, grid_masks)
        f, states = self.compressor.step(e, self.pos_history, recurrent.mamba)
        propagated = self._propagate(look, memory)
        outputs = self._decode(x, f, feats_4, slot_active, grid_masks, batch_invariant, propagated)
        outputs.look_features = look
        outputs.propagated = propagated
        return outputs, RecurrentTensors(x, states)

    def forward_parallel(
        self, frames: Tensor, history_masks: Tensor, history_active: Tensor
    ) -> NetOutputs:
        """All T frames at once, teacher forced.

        frames (b, T, H, W, 3) uint8; history_masks (b, T, N_id, H, W) and history_active
        (b, T, N_id): the masks and slots fed in at step t (i.e. M_{t-1}, A_{t-1}).
        Outputs have leading dims (b, T).
        """
        b, t = frames.shape[:2]
        feats_4, x, look = self.backbone(self.backbone.normalise(frames.flatten(0, 1)))
        x_seq = x.unflatten(0, (b, t))
        x0 = self.x_init.view(1, 1, -1, 1, 1).expand(b, 1, *x_seq.shape[2:])
        x_prev = torch.cat([x0, x_seq[:, :-1]], dim=1).flatten(0, 1)
        active = history_active.flatten(0, 1)
        grid = masks_to_grid(history_masks.flatten(0, 1))
        e = self._history(x_prev, active, grid)
        f, _ = self.compressor(e.unflatten(0, (b, t)), self.pos_history)
        propagated = None
        if self.readout is not None:
            memory = clip_memory(
                look.unflatten(0, (b, t)), history_masks, history_active, self.cfg.memory_frames
            )
            propagated = self._propagate(look, memory)
        out = self._decode(x, f.flatten(0, 1), feats_4, active, grid, propagated=propagated)
        return NetOutputs(
            out.class_logits.unflatten(0, (b, t)),
            out.mask_logits.unflatten(0, (b, t)),
            [
                QueryPredictions(
                    a.class_logits.unflatten(0, (b, t)), a.mask_logits.unflatten(0, (b, t))
                )
                for a in out.aux
            ],
        )
