"""Track bookkeeping after each network step (MODEL.md section 3.5 and the streaming choices).

Kept apart from the ``nn.Module``s so the network stays pure tensors. Per stream and frame,
:func:`update_stream` (``update.py``) runs the rules of ``rules/`` in a fixed order, each
named and explained there:

1. **Tracks** (``rules/tracks.py``, ``connected.py``, ``jumps.py``): each active ID slot's
   own query shows its object, cut to where it was; repeats of another track and jumps onto
   a neighbour are unseen; unseen tracks are kept for a while, then retired.
2. **Prompts** (``rules/prompts.py``): queued prompts replace, adopt or start tracks.
3. **Detections** (``rules/detections.py``): new objects start tracks; lost tracks are
   found again near where they were, by their look, or (prompted) anywhere.
4. **Hand-over** (``rules/handover.py``): a lost prompted object takes over the young
   unprompted track that found it.
5. **Looks** (``rules/looks.py``, the cue in ``looks.py``): identities follow their look:
   twins on one object merge, tracks whose queries swapped objects trade identities.

A slot is an ID vector of the buffer; an identity (track id, object id, look, class
evidence, age) is what users see of it, and moves between slots only through
``slots.move_identities``. Track ids shown to users are a per-stream counter from 1, never
reused; slots are drawn by :func:`sample_slot`, a pure function of (stream seed, allocation
count), so a replayed stream reproduces its ids bit for bit. The tracker's settings are a
:class:`TrackerConfig`, taken from the model's ``AUSMConfig``.

:func:`update_batch` (``batched.py``) runs a whole step's streams at once with a constant
number of reads to the host, equal to ``update_stream`` to the bit (``AUSMConfig.tracker``).
"""

from ausm_stream.model.tracking.batched import update_batch
from ausm_stream.model.tracking.config import TrackerConfig
from ausm_stream.model.tracking.masks import mask_boxes, mask_iou, upsample_masks
from ausm_stream.model.tracking.results import HOST_FIELDS, StepResult, results_to_host
from ausm_stream.model.tracking.slots import sample_slot
from ausm_stream.model.tracking.update import update_stream

__all__ = [
    "HOST_FIELDS",
    "StepResult",
    "TrackerConfig",
    "mask_boxes",
    "mask_iou",
    "results_to_host",
    "sample_slot",
    "update_batch",
    "update_stream",
    "upsample_masks",
]
