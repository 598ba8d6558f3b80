"""Review: from hotspots to signed bundles.

- :mod:`.remediation` — the remediation map (typed data file); risk classes are :class:`aggregation.risk.RiskClass`.
- :mod:`.candidates` — hotspot rules and candidate detection over merged signals.
- :mod:`.workflow` — the candidate state machine: create, edit, approve, reject.
- :mod:`.trust_root` — the reviewer trust root held by the server.
- :mod:`.bundles` — issuing signed cohort bundles.
- :mod:`.models` — the tables; :mod:`.service` and :mod:`.bundle_service` — the servicers.

Depends on :mod:`server.signals` and :mod:`server.identity`.
"""
