"""Evaluation before any user sees a candidate: replay and shadow evidence, and remediation SLAs.

- :mod:`.replay` — the merged replay slices (stable vs candidate arm) and the replay gate.
- :mod:`.shadow` — the merged paired shadow outcomes and the paired (McNemar-style) gate.
- :mod:`.slices` — reading one rollout's labelled slices from the merged windows.
- :mod:`.sla` — hotspot ages against the remediation SLAs (detection to promoted fix).

Depends on :mod:`server.signals` (merged cells) and :mod:`aggregation` only.
"""
