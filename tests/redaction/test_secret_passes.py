"""The label-bound and secret passes that run before the recognizers (API keys, secret
assignments, bearer tokens, JWTs, labelled SSNs, MRNs, URLs): each starts at a word
boundary, in any case where the label is case-insensitive, and stays linear."""

from __future__ import annotations

import pytest

from tenant_agent.redact import Redactor
from tenant_agent.redaction import engine
from tenant_agent.redaction.recognizers import URL
from tests.redaction.test_adversarial import BOUND, scaling

KEY = "sk-proj-" + "x" * 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {KEY}", "key <API_KEY>"),
        (f"({KEY})", "(<API_KEY>)"),
        (f"x{KEY}", f"x{KEY}"),  # inside a word: not a key prefix
        ("id AKIAABCDEFGHIJKLMNOP.", "id <API_KEY>."),
        ("id XAKIAABCDEFGHIJKLMNOP", "id XAKIAABCDEFGHIJKLMNOP"),
        ("rk_live_" + "a" * 16, "<API_KEY>"),
        ("glpat-" + "a" * 20, "<API_KEY>"),
        ("-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----", "<API_KEY>"),
        ("password=hunter2222", "password=<API_KEY>"),
        ("PASSWORD: hunter2222", "PASSWORD: <API_KEY>"),
        ("Client-Secret = 'abcdefgh'", "Client-Secret = '<API_KEY>'"),
        ("mypassword=hunter2222", "mypassword=hunter2222"),
        ("Authorization: Bearer abcdefgh12345", "Authorization: Bearer <BEARER_TOKEN>"),
        ("xBearer abcdefgh12345", "xBearer abcdefgh12345"),
        ("tok eyJhbGciOi.eyJzdWIiOi.sig", "tok <BEARER_TOKEN>"),
        ("aeyJhbGciOi.eyJzdWIiOi.sig", "aeyJhbGciOi.eyJzdWIiOi.sig"),
        ("Social Security No. 123456789", "Social Security No. <US_SSN>"),
        ("MRN: 1234567", "MRN: <MRN>"),
        ("Patient ID ab-123456", "Patient ID <MRN>"),
        ("chart # 123456", "chart # <MRN>"),
        ("apatient id 1234567", "apatient id 1234567"),
        ("see HTTPS://a.example.com/x.", "see <URL>."),
        ("xhttps://a.example.com/x", "xhttps://a.example.com/x"),
        ("WWW.example.com ok", "<URL> ok"),
    ],
)
def test_secret_and_label_passes(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected


UNITS = [
    "sk-", "sk-a", "sk_live_", "AKIA", "gh", "ghp_a", "github_pat_", "xoxb-a", "AIza", "glpat-", "-----BEGIN A PRIVATE KEY-----",
    "password", "password=", "pwd: ", "secret ", "api_key=a", "Bearer ", "Basic a", "eyJ", "eyJaaaaa.", "ssn ", "SSN: ",
    "social security ", "mrn ", "patient id ", "chart # 1", "http://", "https://a", "www.", "WWW.a",
]  # fmt: skip
PATTERNS = {
    "API_KEY": engine._API_KEY, "SECRET_ASSIGNMENT": engine._SECRET_ASSIGNMENT, "BEARER": engine._BEARER,
    "JWT": engine._JWT, "SSN_LABELLED": engine._SSN_LABELLED, "MRN": engine._MRN, "URL": URL,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_secret_pass_is_linear(name: str) -> None:
    pattern = PATTERNS[name]
    for unit in UNITS:
        ratio = scaling(lambda s: sum(1 for _ in pattern.finditer(s)), unit, max(600, 4_000 // len(unit)))
        assert ratio < BOUND, (name, unit)
