"""Signals: what tenants report and what the central team sees.

- :mod:`.schemas` — the cohort's published signal schema.
- :mod:`.ingest` — validating a submitted report; :mod:`.refusals` — why a report is refused.
- :mod:`.store` — the group-committed report store.
- :mod:`.merge` — the periodic merge of pending reports into cohort windows.
- :mod:`.views` — merged cells with k-suppression and intervals; :mod:`.report_html` — the HTML report.
- :mod:`.models` — the tables; :mod:`.service` — the SignalService servicer.

Depends on :mod:`server.identity` only.
"""
