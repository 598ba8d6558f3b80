from __future__ import annotations

from typing import Any


def register(groups: Any) -> None:
    """Add this module's command group to the top-level ``fedsignal`` parser."""
