"""Label propagation from a memory of past frames (ours; MODEL.md section 11).

Each pixel of the current frame's 1/8 grid takes the slot labels of its ``memory_topk``
most similar pixels in the memory frames, weighted by a softmax over their similarities
divided by ``memory_temperature``. A pixel's label says how much of it each ID slot's mask
covered (the rest is background). Similarities are dot products of the backbone's look
features, frozen ImageNet features normalised per pixel, so propagation needs no training:
alone, it scores prompted J&F 0.58 on ``vos-dev`` (MODEL.md section 11; 0.61 at
``memory_temperature`` 0.1), where the stage-1 real network scored 0.39. The network
(:class:`ausm_stream.model.network.AUSMNet`) takes the propagated masks P_t as one more
view of where each slot's object is now, besides its compressed history; see
``AUSMConfig.memory_frames``.

The top ``memory_topk`` keys are chosen on bfloat16 similarities and weighted by their
float32 ones: the bfloat16 matmul takes a third of float32's time on a core with AVX512-BF16
(12 vs 35 ms for the real preset's 1,344 pixels against 4 memory frames), and only keys
that tie within bfloat16's rounding can be chosen otherwise. Both paths (streaming and
parallel) propagate this way, on every device.

The memory holds 1 + ``memory_frames`` frames, in this order: the *anchor*, the frame of
the stream's latest prompt (its first frame until a prompt comes), then the last
``memory_frames`` frames, newest first. A frame's labels are what the tracker kept of it:
where a track was shown, its propagated mask (probabilities, not thresholded: propagation
alone scored 0.61 so, 0.50 from thresholded masks); a prompt's mask as given
(``tracking/update.py``, ``slot_soft_masks``). They enter the memory at the start of the
next step, from the state, so a teacher-forced parallel pass builds the same memory from
its history masks (:func:`clip_memory`), and a test checks both paths agree. Training
feeds the (noised) true masks as labels, as it does for the history.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ausm_stream.model.marker import masks_to_grid
from ausm_stream.model.state import StreamState


@dataclass
class Memory:
    """The memory of a batch of streams (or clip frames), F frames each."""

    features: Tensor  # (b, F, C, h, w) float: look features of the memory frames
    labels: Tensor  # (b, F, N_id, h, w) float in [0, 1]: each slot's share of a cell
    valid: Tensor  # (b, F) bool: frames that exist (a young stream has fewer)


def propagate(query: Tensor, memory: Memory, topk: int, temperature: float) -> Tensor:
    """P (b, N_id, h, w): each slot's propagated mask on ``query``'s grid (b, C, h, w).

    One stream at a time, so a stream's P never depends on its batch mates (as
    ``network.frame_by_frame``); a stream with no valid memory frame gets zeros.
    """
    return torch.stack(
        [_propagate_one(query[i], memory, i, topk, temperature) for i in range(len(query))]
    )


def _propagate_one(query: Tensor, memory: Memory, i: int, topk: int, temperature: float) -> Tensor:
    n = memory.labels.shape[2]
    c, h, w = query.shape
    valid = memory.valid[i]
    if not bool(valid.any()):
        return query.new_zeros(n, h, w)
    keys = memory.features[i][valid].float().permute(0, 2, 3, 1).reshape(-1, c)
    slots = memory.labels[i][valid].float().permute(0, 2, 3, 1).reshape(-1, n)
    background = (1.0 - slots.sum(1, keepdim=True)).clamp(min=0.0)
    labels = torch.cat([background, slots], dim=1)
    q = query.float().flatten(1).T  # (h*w, C)
    # Which keys: chosen on bfloat16 similarities (a third of float32's matmul time on CPUs
    # with AVX512-BF16, and on GPUs); their weights: float32 similarities of the chosen.
    coarse = q.to(torch.bfloat16) @ keys.to(torch.bfloat16).T
    index = coarse.topk(min(topk, keys.shape[0]), dim=1).indices
    top = torch.einsum("pc,pkc->pk", q, keys[index]) / temperature
    weights = top.softmax(dim=1)
    propagated = torch.einsum("pk,pkn->pn", weights, labels[index])
    return propagated[:, 1:].T.reshape(n, h, w)


def clip_memory(
    looks: Tensor, history_masks: Tensor, history_active: Tensor, frames: int
) -> Memory:
    """The memory each frame of teacher-forced clips sees, as the streaming path builds it.

    looks (b, T, C, h, w); history_masks (b, T, N_id, H, W) and history_active (b, T, N_id)
    are M_{t-1} and A_{t-1} fed at step t, so frame j's labels are the history of step
    j + 1. Returns the memory of all b * T steps (batch ``(b T)``): the anchor is frame 0
    (no prompt comes after it in a training clip) and frames t-1 .. t-``frames`` follow.
    """
    b, t_len = looks.shape[:2]
    grid = masks_to_grid(history_masks) * history_active[..., None, None]
    # labels[:, j] belong to frame j: the history fed at step j + 1 (the last frame's
    # labels are never needed: no step follows it in the clip).
    labels = torch.cat([grid[:, 1:], torch.zeros_like(grid[:, :1])], dim=1)
    steps = torch.arange(t_len, device=looks.device)
    sources = torch.stack(
        [torch.zeros_like(steps)] + [steps - k for k in range(1, frames + 1)], dim=1
    )  # (T, F): memory frame indexes of each step
    valid = (sources >= 0) & (steps[:, None] >= 1)
    index = sources.clamp(min=0)
    return Memory(
        features=looks[:, index].flatten(0, 1).to(MEMORY_DTYPE),
        labels=labels[:, index].flatten(0, 1).to(MEMORY_DTYPE),
        valid=valid.expand(b, -1, -1).flatten(0, 1),
    )


MEMORY_DTYPE = torch.float16
"""How memory frames are stored in a stream's state (and rounded to on the parallel path, so
both paths propagate from the same numbers): the look features are unit vectors per pixel
and the labels multiples of 1/64, which float16 holds to 1e-3 and exactly."""


def receive_labels(state: StreamState) -> None:
    """Start of a step: the previous frame's history masks M_{t-1}, as probabilities
    (``slot_soft_masks``, written by the tracker), become its labels in the memory, and the
    anchor's when that frame is the anchor."""
    if state.memory_labels.shape[0] == 0:
        return
    labels = (state.slot_soft_masks * state.slot_active[:, None, None]).to(MEMORY_DTYPE)
    _push_newest(state.memory_labels, labels)
    # Selected on the device, not branched on the host: a step reads no stream's flag.
    due = state.memory_anchor_due[0]
    state.memory_labels[0] = torch.where(due, labels, state.memory_labels[0])
    state.memory_valid[0] |= due
    state.memory_anchor_due[0] = False


def remember_frame(state: StreamState, look: Tensor, prompted: Tensor) -> None:
    """End of a step: this frame's look features (C, h, w) join the memory as its newest
    frame, and become the anchor at a stream's first frame or when a prompt was applied
    (``prompted``, a bool tensor on the state's device: selected there, not read; their
    labels follow at the next step, :func:`receive_labels`)."""
    if state.memory_features.shape[0] == 0:
        return
    features = look.to(MEMORY_DTYPE)
    _push_newest(state.memory_features, features)
    _push_newest(state.memory_valid, True)
    anchor = prompted | (state.frames_seen == 1)
    state.memory_features[0] = torch.where(anchor, features, state.memory_features[0])
    state.memory_anchor_due[0] |= anchor


def _push_newest(ring: Tensor, item: Tensor | bool) -> None:
    """Frames 1.. of a memory tensor (0 is the anchor) move one older; ``item`` is frame 1."""
    ring[2:] = ring[1:-1].clone()
    ring[1] = item


def stream_memory(states: list[StreamState]) -> Memory | None:
    """The memories of a batch of streams, or None where the model keeps none."""
    if states[0].memory_features.shape[0] == 0:
        return None
    return Memory(
        features=torch.stack([s.memory_features for s in states]),
        labels=torch.stack([s.memory_labels for s in states]),
        valid=torch.stack([s.memory_valid for s in states]),
    )
