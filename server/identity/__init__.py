"""Identity: who may call the server.

- :mod:`.ca` — the server CA: keys, certificates, TLS files.
- :mod:`.enrollment` — tenants, one-time enrollment tokens, certificates, revocation.
- :mod:`.auth` — authenticating a call from its client certificate (``require``).
- :mod:`.models` — the tables; :mod:`.service` — the EnrollmentService servicer.

Other packages use ``auth.require``, ``enrollment`` and ``ca``; nothing here imports
another domain package.
"""
