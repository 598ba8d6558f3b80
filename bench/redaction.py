"""Redaction quality and speed, in one process, side by side.

    .venv/bin/python -m bench.redaction [--per-type 120] [--negatives 1500] [--seed 14] [--repeat 3]
                                        [--no-presidio] [--no-baseline] [--baseline-rev 94207de]

Prints, on the labelled corpus of ``tests/redaction/corpus.py`` (deterministic, Faker):
precision and recall per entity type for this redactor, the redactor before this round
(``git show 94207de:tenant_agent/redact.py``, the single-module redactor of 11 types, loaded as
a module beside the new one; ``--baseline-rev`` picks another commit whose
``tenant_agent/redact.py`` is self-contained)
and — when ``presidio-analyzer`` is installed (the ``bench`` extra) — Presidio's
pattern recognizers (no NLP model: ``NoOpNlpEngine``) plus its anonymizer; the
share of hard negatives each one touches; and texts/s of each on the corpus
texts and on the 300-character texts of ``bench/collector.py`` (no PII, 30 %
PII, all PII). Absolute figures move a lot on a shared machine: compare within
one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from tenant_agent.redact import ENTITY_TYPES, Redactor
from tests.redaction.corpus import UNCOVERED, Doc, Score, generate, score

ROOT = Path(__file__).resolve().parents[1]

# Presidio's entity names -> ours (the types that mean the same identifier).
PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "IBAN_CODE": "IBAN", "DATE_TIME": "DATE",
    "US_PASSPORT": "PASSPORT", "US_DRIVER_LICENSE": "DRIVER_LICENSE", "US_BANK_NUMBER": "BANK_ACCOUNT",
    "ABA_ROUTING_NUMBER": "ABA_ROUTING", "SG_NRIC_FIN": "SG_NRIC", "IT_FISCAL_CODE": "NATIONAL_ID",
    "ES_NIF": "NATIONAL_ID", "ES_NIE": "NATIONAL_ID", "PL_PESEL": "NATIONAL_ID",
    "FI_PERSONAL_IDENTITY_CODE": "NATIONAL_ID", "CRYPTO": "CRYPTO_WALLET", "IN_VEHICLE_REGISTRATION": "IN_VEHICLE",
    "UK_POSTCODE": "UK_POSTCODE", "MAC_ADDRESS": "MAC_ADDRESS", "IN_GSTIN": "IN_GSTIN", "IN_PASSPORT": "PASSPORT",
    "IN_VOTER": "NATIONAL_ID", "SE_PERSONNUMMER": "NATIONAL_ID", "DE_TAX_ID": "NATIONAL_ID", "NG_NIN": "NATIONAL_ID",
    "TH_TNIN": "NATIONAL_ID", "TR_NATIONAL_ID": "NATIONAL_ID", "US_MBI": "MBI", "US_NPI": "NPI",
    "UK_DRIVING_LICENCE": "DRIVER_LICENSE", "IT_DRIVER_LICENSE": "DRIVER_LICENSE", "KR_DRIVER_LICENSE": "DRIVER_LICENSE",
    "DE_FUEHRERSCHEIN": "DRIVER_LICENSE", "UK_PASSPORT": "PASSPORT", "DE_PASSPORT": "PASSPORT", "ES_PASSPORT": "PASSPORT",
    "IT_PASSPORT": "PASSPORT", "KR_PASSPORT": "PASSPORT", "PH_PASSPORT": "PASSPORT",
    "US_HEALTH_INSURANCE_MEMBER_ID": "INSURANCE_ID", "DE_HEALTH_INSURANCE": "INSURANCE_ID", "DE_VAT_ID": "VAT_ID",
    "IT_VAT_CODE": "VAT_ID", "DE_ID_CARD": "NATIONAL_ID", "IT_IDENTITY_CARD": "NATIONAL_ID",
}  # fmt: skip
_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")


#: The last commit whose redactor was the single module tenant_agent/redact.py (11 types).
BASELINE_REV = "94207de"


def load_baseline(rev: str = BASELINE_REV) -> ModuleType | None:
    """The redactor of commit ``rev`` (``tenant_agent/redact.py``), as a module of its own."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:tenant_agent/redact.py"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    if "tenant_agent.redaction" in source:
        return None  # a facade over the package: it would load today's code, not the old one
    name = "fedsignal_redact_" + re.sub(r"\W", "_", rev)
    path = Path("/tmp") / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def presidio_redact(every_recognizer: bool) -> tuple[Callable[[str], str], str] | None:
    """Presidio without an NLP model, and its anonymizer, as a text -> text function: the
    default English registry's pattern recognizers, or (``every_recognizer``) every
    predefined recognizer that needs no model."""
    try:
        from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_anonymizer import AnonymizerEngine
    except ImportError:
        return None
    import logging

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    # Presidio's URL recognizer asks tldextract for the suffix list; without network it falls
    # back to its bundled snapshot after logging the failed fetch.
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp.load()
    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(nlp_engine=nlp)
    # Every predefined recognizer that needs no NLP model, in English: the pattern recognizers
    # (also the country ones the default configuration leaves off: AU, IN, SG, KR, ES, IT, PL,
    # FI, ...) and the phone recognizer (the phonenumbers library, not a model).
    from presidio_analyzer import predefined_recognizers as predefined

    loaded = {type(r) for r in registry.recognizers}
    recognizers = [
        r for r in registry.recognizers
        if isinstance(r, PatternRecognizer) or (every_recognizer and type(r).__name__ == "PhoneRecognizer")
    ]  # fmt: skip
    for name in sorted(dir(predefined)) if every_recognizer else ():
        cls = getattr(predefined, name)
        if isinstance(cls, type) and issubclass(cls, PatternRecognizer) and cls is not PatternRecognizer and cls not in loaded:
            try:
                recognizers.append(cast(Any, cls)(supported_language="en"))
            except TypeError:
                continue
    registry.recognizers = recognizers
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
    anonymizer = AnonymizerEngine()

    def rename(m: re.Match[str]) -> str:
        return f"<{PRESIDIO_TYPES.get(m.group(1), m.group(1))}>"

    def redact(text: str) -> str:
        results = analyzer.analyze(text=text, language="en")
        return _PLACEHOLDER.sub(rename, anonymizer.anonymize(text=text, analyzer_results=results).text)  # type: ignore[arg-type]

    from importlib.metadata import version as installed

    version = installed("presidio-analyzer")
    names = sorted({e for r in registry.recognizers for e in r.supported_entities})
    return redact, f"Presidio {version} ({len(registry.recognizers)} recognizers, no NLP model: {', '.join(names)})"


def texts_per_second(redact: Callable[[str], str], texts: Sequence[str], repeat: int) -> float:
    """Texts per CPU second of this process (best of ``repeat``): on a shared machine CPU time
    moves far less than wall time, and both redactors run in the same process."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for text in texts:
            redact(text)
        best = min(best, time.process_time() - start)
    return len(texts) / best


def collector_texts(seed: int, n: int) -> dict[str, list[str]]:
    """The 300-character texts of bench/collector.py (loaded from its file: bench is no package,
    and importing it by two names would trip mypy)."""
    spec = importlib.util.spec_from_file_location("fedsignal_bench_collector", ROOT / "bench" / "collector.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("bench/collector.py not found")
    collector = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = collector
    spec.loader.exec_module(collector)
    text_300 = collector.text_300
    rng = random.Random(seed)
    return {
        "300 chars, no PII": [text_300(rng, False) for _ in range(n)],
        "300 chars, 30 % PII": [text_300(rng, rng.random() < 0.3) for _ in range(n)],
        "300 chars, all PII": [text_300(rng, True) for _ in range(n)],
    }


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def print_quality(scores: dict[str, Score]) -> None:
    names = list(scores)
    ours = scores[names[0]]
    labels = [label for label in ours.labels() if ours.tp[label] + ours.fn[label]]
    head = f"{'entity':<16}{'n':>5}  {'precision':>9} {'recall':>7} {'any':>6}"
    for name in names[1:]:
        head += f" | {name[:17]:>17}"
    print(head)
    for label in labels:
        has_recognizer = label not in UNCOVERED
        line = (
            f"{label:<16}{ours.tp[label] + ours.fn[label]:>5}  {ours.precision(label):>9.3f} "
            f"{ours.recall(label):>7.3f} {ours.any_recall(label):>6.3f}"
        )
        for name in names[1:]:
            line += f" | {scores[name].recall(label):>17.3f}"
        print(line + ("" if has_recognizer else "   (no recognizer)"))
    print()
    for name, result in scores.items():
        covered = [lb for lb in labels if lb not in UNCOVERED]
        own = [lb for lb in covered if result.tp[lb]]
        tp = sum(result.tp[lb] for lb in labels)
        support = sum(result.tp[lb] + result.fn[lb] for lb in labels)
        print(
            f"{name:<24} hard negatives touched {result.negatives_touched}/{result.negatives} "
            f"({result.negative_rate:.2%}); recall over every type {tp / support:.3f}; "
            f"types with any hit {len(own)}/{len(covered)}; worst covered type "
            f"{min(covered, key=result.recall)} {min(result.recall(lb) for lb in covered):.3f}"
        )
        if result.touched_families:
            print(f"{'':<24} hard negatives touched by family: {dict(result.touched_families.most_common())}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-type", type=int, default=120)
    parser.add_argument("--negatives", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--collector-texts", type=int, default=3000)
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="commit of the older redactor")
    args = parser.parse_args(argv)

    docs: list[Doc] = generate(args.seed, args.per_type, args.negatives)
    print(f"corpus: {len(docs)} texts (seed {args.seed}), {len(ENTITY_TYPES)} built-in entity types\n")
    redactors: dict[str, Callable[[str], str]] = {"fedsignal": Redactor().redact}
    baseline = None if args.no_baseline else load_baseline(args.baseline_rev)
    if baseline is not None:
        redactors[f"fedsignal {args.baseline_rev}"] = baseline.Redactor().redact
    elif not args.no_baseline:
        print(f"no self-contained tenant_agent/redact.py at {args.baseline_rev}: the older redactor is left out\n")
    presidio = None if args.no_presidio else presidio_redact(False)
    if presidio is not None:
        redactors["presidio"] = presidio[0]
        print("presidio:     " + presidio[1] + "\n")
        every = presidio_redact(True)
        if every is not None:
            redactors["presidio all"] = every[0]
            print("presidio all: " + every[1] + "\n")
    elif not args.no_presidio:
        print("presidio-analyzer not installed (pip install -e '.[bench]'): its columns are left out\n")

    scores = {name: score(redact, docs) for name, redact in redactors.items()}
    print_quality(scores)

    print(f"\nthroughput (texts per CPU second, best of {args.repeat} runs; Presidio: one run of 2,000 texts)")
    sets = {"corpus texts": [d.text for d in docs], **collector_texts(args.seed, args.collector_texts)}
    rates: dict[str, dict[str, float]] = {}
    for set_name, texts in sets.items():
        rates[set_name] = {}
        for name, redact in redactors.items():
            slow = name.startswith("presidio")
            sample = texts[:2000] if slow else texts
            rates[set_name][name] = texts_per_second(redact, sample, 1 if slow else args.repeat)
        line = f"  {set_name:<22}" + "".join(f"{name} {rate:>10,.0f}   " for name, rate in rates[set_name].items())
        for other in [n for n in rates[set_name] if n.startswith("fedsignal ")] + ["presidio", "presidio all"]:
            if other in rates[set_name]:
                line += f"fedsignal/{other} {_ratio(rates[set_name]['fedsignal'] / rates[set_name][other])}   "
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
