"""Generated wire contract, package ``fedsignal.v1`` (see ``proto/generate.py``)."""
