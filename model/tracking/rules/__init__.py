"""The tracker's rules, one family per module; ``tracking/update.py`` runs them in order.

- ``tracks``: each track's own query: its mask, visibility, repeats, missing frames.
- ``connected``: a track keeps only the part of its mask where its object was.
- ``jumps``: a track whose mask leaps has jumped onto a neighbour.
- ``prompts``: queued prompts replace, adopt or start tracks.
- ``detections``: new objects, and lost tracks found again (re-identification).
- ``handover``: a lost prompted object takes over the young track that found it.
- ``looks``: identities follow their look (merge twins, trade identities, remember looks).
"""
