"""The ID slots of one stream as one frame's update sees them: who is shown, allocation,
retirement, and the one way an identity moves from slot to slot.

A slot holds an ID vector of the buffer B (its query, mask and history stay with the slot);
an *identity* is what the user sees of it: track id, prompt object id, look, class
evidence and age. Rules that decide two slots show each other's objects (a trade, a twin
merge, a hand-over) move identities with :func:`move_identities` and nothing else.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ausm_stream.model.state import StreamState
from ausm_stream.model.tracking.config import TrackerConfig
from ausm_stream.model.tracking.looks import Look

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_slot(free_slots: list[int], seed: int, count: int) -> int:
    """Deterministic draw from the unused ID slots, keyed by (seed, allocation count), so a
    replayed stream reproduces its slots, and so its outputs, bit for bit."""
    return free_slots[_splitmix64(_splitmix64(seed & _MASK64) ^ count) % len(free_slots)]


def _signed(x: int) -> int:
    """A uint64 as the int64 with the same bits."""
    return x - (1 << 64) if x >= 1 << 63 else x


def _shift_right(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 tensors read as uint64 (torch's ``>>`` is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _splitmix64_tensor(x: Tensor) -> Tensor:
    """:func:`_splitmix64` on int64 tensors read as uint64: adds and products wrap."""
    x = x + _signed(0x9E3779B97F4A7C15)
    x = (x ^ _shift_right(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shift_right(x, 27)) * _signed(0x94D049BB133111EB)
    return x ^ _shift_right(x, 31)


def sample_slots(free: Tensor, seeds: Tensor, counts: Tensor) -> Tensor:
    """:func:`sample_slot` for a batch of streams on their device: ``free`` (B, N) bool, the
    unused slots; ``seeds`` (B,) the streams' seeds as int64 (the same 64 bits); ``counts``
    (B,) their allocation counts. (B,) the slot each draws (meaningless where none is free).
    The same bits as the host's draw: the hash wraps as uint64, and its remainder is taken as
    of a uint64 (an int64 below zero stands for itself plus 2^64)."""
    h = _splitmix64_tensor(_splitmix64_tensor(seeds) ^ counts)
    n = free.sum(1).clamp(min=1)
    r = torch.remainder(h, n)
    two_64 = torch.remainder(torch.remainder(torch.full_like(n, 1 << 62), n) * 4, n)
    r = torch.where(h < 0, torch.remainder(r + two_64, n), r)
    rank = free.long().cumsum(1) - 1  # each free slot's place among the free ones
    return (free & (rank == r[:, None])).long().argmax(1)


def seed_bits(seed: int) -> int:
    """A stream's seed as the int64 with the bits :func:`sample_slot` hashes."""
    return _signed(seed & _MASK64)


IDENTITY = (
    "slot_track_id",
    "slot_object_id",
    "slot_appearance",
    "slot_class_evidence",
    "slot_age",
)
"""The state's per-slot fields that belong to an identity, not to its slot."""


class Frame:
    """One stream's update at one frame: the network's outputs read once, the state to
    mutate, and the tracks shown so far (``emitted``), collected per slot."""

    def __init__(
        self,
        cfg: TrackerConfig,
        state: StreamState,
        class_logits: Tensor,
        mask_logits: Tensor,
        look: Look | None,
    ) -> None:
        self.cfg, self.state, self.look = cfg, state, look
        probs = class_logits.float().softmax(-1)
        self.scores = 1.0 - probs[:, -1]
        self.class_probs = probs[:, :-1]
        self.labels = self.class_probs.argmax(-1)
        self.mask_logits = mask_logits.float()  # autocast leaves them in half precision
        self.device = mask_logits.device  # the state's and the network's: every tensor's here
        # slot -> (mask, score, query whose class probabilities count as this frame's evidence)
        self.emitted: dict[int, tuple[Tensor, float, int]] = {}
        # slots whose identity starts its look this frame (new tracks, prompts)
        self.fresh_look: set[int] = set()
        # slots shown with a prompt's mask this frame
        self.prompted: set[int] = set()
        # looks are compared (twin merges, re-identification, the remembered look's gate)
        # only where this step came with what they are made of, and reid_look is on
        self.by_look = look is not None and cfg.reid_look > 0

    def active_slots(self) -> list[int]:
        return self.state.slot_active.nonzero().flatten().tolist()

    def lost_slots(self) -> list[int]:
        """Active slots not shown (so far) at this frame."""
        return [i for i in self.active_slots() if i not in self.emitted]

    def free_slots(self) -> list[int]:
        return [i for i, a in enumerate(self.state.slot_active.tolist()) if not a]

    def visible_masks(self) -> tuple[list[int], Tensor]:
        slots = sorted(self.emitted)
        if not slots:
            empty = torch.zeros(0, *self.cfg.image_size, dtype=torch.bool, device=self.device)
            return [], empty
        return slots, torch.stack([self.emitted[s][0] for s in slots])

    def show(self, slot: int, mask: Tensor, score: float, query: int) -> None:
        """``slot`` is visible at this frame with ``mask``; ``query``'s class counts."""
        self.state.slot_missing[slot] = 0
        self.emitted[slot] = (mask, score, query)

    def allocate(self, object_id: int = -1) -> int:
        """A fresh slot from the unused part of the buffer, under a new track id."""
        s = self.state
        slot = sample_slot(self.free_slots(), s.seed, s.alloc_count)
        s.alloc_count += 1
        s.slot_active[slot] = True
        s.slot_track_id[slot] = s.next_track_id
        s.next_track_id += 1
        s.slot_object_id[slot] = object_id
        s.slot_missing[slot] = 0
        s.slot_class_evidence[slot] = 0.0
        s.slot_age[slot] = 0
        self.fresh_look.add(slot)
        return slot

    def retire(self, slot: int) -> None:
        """The slot's ID vector returns to the pool; its identity ends."""
        s = self.state
        s.slot_active[slot] = False
        s.slot_track_id[slot] = -1
        s.slot_object_id[slot] = -1
        s.slot_missing[slot] = 0
        s.slot_label[slot] = -1
        s.slot_class_evidence[slot] = 0.0
        s.slot_appearance[slot] = 0.0
        s.slot_age[slot] = 0
        s.memory_labels[:, slot] = 0.0  # its history ends: a later track starts afresh
        self.emitted.pop(slot, None)


def move_identities(f: Frame, src: list[int], dst: list[int]) -> None:
    """Slot ``dst[i]`` carries ``src[i]``'s identity (:data:`IDENTITY`) from now on, all at
    once, so ``src`` and ``dst`` may be a permutation. Each slot keeps its mask, query and
    history. A moved identity brings its remembered look, so ``dst`` no longer starts one."""
    s = f.state
    src_t = torch.tensor(src, dtype=torch.int64, device=f.device)
    dst_t = torch.tensor(dst, dtype=torch.int64, device=f.device)
    for name in IDENTITY:
        table = getattr(s, name)
        table[dst_t] = table[src_t].clone()
    f.fresh_look.difference_update(dst)


def absorb(f: Frame, heir: int, slot: int, take_name: bool) -> None:
    """Two tracks found to be one: ``heir`` goes on, ``slot`` is retired. The class evidence
    of both adds up; the age is the longer of the two (the object was seen at least that
    long); with ``take_name`` the heir carries ``slot``'s identity, else its own."""
    s = f.state
    evidence = s.slot_class_evidence[heir] + s.slot_class_evidence[slot]
    age = torch.maximum(s.slot_age[heir], s.slot_age[slot])
    if take_name:
        move_identities(f, [slot], [heir])
    s.slot_class_evidence[heir] = evidence
    s.slot_age[heir] = age
    f.retire(slot)
