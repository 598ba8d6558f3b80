"""Domain names checked against the bundled Public Suffix List snapshot.

``tenant_agent/data/public_suffix_list.dat`` is read once, lazily, from the
package (never fetched at run time). A host name counts as a domain when its
suffix is a public suffix and at least one label stands before it
(``clinic.example.co.uk``; not ``co.uk`` alone, not ``www.example``).

Telemetry is full of dotted identifiers that end in a country code (``main.py``,
``setup.sh``, ``README.md``, ``event.id``): suffixes that are also common file
extensions, English words or attribute names count only when the name has
a ``www.`` label — see ``AMBIGUOUS_SUFFIXES`` and ``CLASSIC_GENERIC``.
"""

from __future__ import annotations

import threading
from importlib import resources

# Country codes that are far more often a file extension (``main.py``, ``README.md``) or an
# English word run into a full stop (``failed.it``): a name ending in one needs more evidence.
AMBIGUOUS_SUFFIXES = frozenset(
    [
        "py",
        "sh",
        "md",
        "rs",
        "pl",
        "ps",
        "ml",
        "so",
        "cc",
        "mk",
        "sc",
        "id",
        "is",
        "it",
        "in",
        "me",
        "my",
        "no",
        "as",
        "at",
        "be",
        "do",
        "to",
        "us",
        "am",
    ]
)
# Generic suffixes a bare name may end in; newer generic suffixes (``.app``, ``.name``, ``.email``,
# ``.zip``) are attribute names and file types as often as domains and count only after ``www.``.
CLASSIC_GENERIC = frozenset(["com", "net", "org", "edu", "gov", "mil", "int", "info", "biz"])
# Second-level labels under a country code that make ``x.com.py`` a domain, not a file.
_COMMON_SECOND_LEVEL = frozenset(["com", "net", "org", "gov", "edu", "ac", "co", "gob", "gouv", "nic"])


class PublicSuffixList:
    """The rules of the Public Suffix List: ``suffix_length(labels)`` gives how many of
    the trailing labels form the public suffix (0 when no rule matches)."""

    def __init__(self, lines: list[str]) -> None:
        self.rules: set[str] = set()
        self.max_labels = 1
        self.wildcards: set[str] = set()
        self.exceptions: set[str] = set()
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("//"):
                continue
            rule = line.split()[0].lower()
            self.max_labels = max(self.max_labels, rule.count(".") + 1)
            if rule.startswith("!"):
                self.exceptions.add(rule[1:])
            elif rule.startswith("*."):
                self.wildcards.add(rule[2:])
            else:
                self.rules.add(rule)

    def suffix_length(self, labels: list[str]) -> int:
        """Number of trailing ``labels`` (lower-case) that form the longest matching public suffix."""
        best = 0
        # No rule is longer than max_labels (+1 for a wildcard's label): the work is bounded.
        for n in range(1, min(len(labels), self.max_labels + 1) + 1):
            candidate = ".".join(labels[-n:])
            if candidate in self.exceptions:
                return n - 1
            if candidate in self.rules:
                best = n
            parent = ".".join(labels[-n + 1 :]) if n > 1 else None
            if parent is not None and parent in self.wildcards:
                best = n
        return best


_lock = threading.Lock()
_psl: PublicSuffixList | None = None


def public_suffix_list() -> PublicSuffixList:
    """The bundled snapshot, parsed on first use."""
    global _psl
    with _lock:
        if _psl is None:
            text = resources.files("tenant_agent.data").joinpath("public_suffix_list.dat").read_text("utf-8")
            _psl = PublicSuffixList(text.splitlines())
        return _psl


def is_domain(host: str) -> bool:
    """True when ``host`` ends in a public suffix with a registrable label before it."""
    if len(host) > 253:  # the DNS limit: longer is not a host name
        return False
    labels = host.lower().rstrip(".").split(".")
    if len(labels) < 2 or any(not label or len(label) > 63 for label in labels):
        return False
    if labels[-1].isdigit():
        return False
    n = public_suffix_list().suffix_length(labels)
    if n == 0 or n >= len(labels):
        return False
    if labels[0] == "www":
        return True
    top = labels[-1]
    if n > 1 or top in CLASSIC_GENERIC:
        return True
    if len(top) != 2:
        return False
    return top not in AMBIGUOUS_SUFFIXES or (len(labels) >= 3 and labels[-2] in _COMMON_SECOND_LEVEL)
