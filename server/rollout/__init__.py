"""Rollout: staged exposure of a signed candidate with sequential DP gates.

- :mod:`.controller` — the periodic controller: advance, hold, promote, roll back.
- :mod:`.evidence` — canary/control evidence per stage from merged signals.
- :mod:`.models` — the tables; :mod:`.service` — the RolloutService servicer.

Depends on :mod:`server.review`, :mod:`server.signals` and :mod:`server.identity`.
"""
