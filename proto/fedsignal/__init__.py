"""fedsignal: privacy-preserving federated learning-signal aggregator.

The generated wire contract lives in :mod:`fedsignal.v1`.
"""

__version__ = "0.1.0"
