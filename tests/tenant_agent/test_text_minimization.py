"""Data minimization of free text: ``DecisionEvent.text`` is discarded unread unless a consumer reads it.

The only consumers are replay capture (replay set enabled and ``store_redacted_text``, or a
replay taxonomy that reads ``text``) and a taxonomy rule on ``text``. Without one, the
collector checks the text like any field (a malformed one is still refused) and drops it
without redacting it, counting it in ``texts_discarded``; with one, it is redacted as before.
Every path: dict events (``record_many``), JSON Lines (``import_jsonl``/``read_jsonl``) and
OTLP (``OtlpMapper``, the collector's ``otlp_mapper``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aggregation.events import DecisionEvent
from aggregation.taxonomy import Category, Taxonomy
from fedsignal_cli.main import main
from tenant_agent import replay_agent
from tenant_agent.collector import Collector
from tenant_agent.ingest import OtlpMapper, read_jsonl
from tenant_agent.ingest.records import MAX_TEXT, DiscardedTexts, EventFormatError, event_from_dict
from tenant_agent.redact import Redactor
from tenant_agent.replay_agent import CollectorReplay, ReplayConfig, ReplaySetSettings

from .collector.fakes import T0, make_config
from .ingest.test_otlp_mapper import request, span

PII_TEXT = "please refund jane.roe@example.org, card 4111 1111 1111 1111"


class CountingRedactor(Redactor):
    """A real redactor that records the free texts it was asked to redact (labels such as session
    ids may go through ``redact`` too: only strings carrying the seeded e-mail are recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def redact(self, text: str) -> str:
        if "jane.roe" in text:
            self.texts.append(text)
        return super().redact(text)


def doc(i: int, **extra: object) -> dict[str, object]:
    return {"schema_version": "1", "session_id": f"s{i}", "timestamp": T0 + i, "intent": "billing",
            "tool_calls": [{"name": "lookup_order", "error": "timeout"}],  # a tool_error: a replay case
            **extra}


def text_taxonomy() -> Taxonomy:
    """A tenant's taxonomy with a rule on the free text."""
    return Taxonomy.from_dict({
        "kind": "fedsignal.taxonomy", "version": "t-1",
        "categories": [{"name": "policy_violation", "reads": ["text"],
                        "when": {"field": "text", "in": ["please refund <email>, card <credit_card>"]}}],
    })


def write_replay_toml(state_dir: Path, *, enabled: bool, store_text: bool) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "replay.toml").write_text(
        f"[replay_set]\nenabled = {str(enabled).lower()}\nstore_redacted_text = {str(store_text).lower()}\n")


def spy_redactions(c: Collector, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = c.redactor.redact

    def redact(text: str) -> str:
        if "jane.roe" in text:  # the seeded free text, not a label that went through redact
            seen.append(text)
        return real(text)

    monkeypatch.setattr(c.redactor, "redact", redact)
    return seen


def spy_batches(c: Collector, monkeypatch: pytest.MonkeyPatch) -> list[DecisionEvent]:
    recorded: list[DecisionEvent] = []
    real = c.book.record

    def record(batch: list[DecisionEvent], *args: Any, **kwargs: Any) -> Any:
        recorded.extend(batch)
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(c.book, "record", record)
    return recorded


# -- the taxonomy helper -----------------------------------------------------------------------------------


def test_reads_field_knows_what_the_rules_read() -> None:
    bundled = Taxonomy.load()
    assert not bundled.reads_field("text")  # the shipped taxonomy never reads free text
    assert bundled.reads_field("tool_calls") and bundled.reads_field("tool_calls.error")
    assert bundled.reads_field("evaluations") and not bundled.reads_field("tool")
    assert text_taxonomy().reads_field("text")
    # A hand-made predicate could read anything.
    hand_made = Taxonomy("h", [Category("tool_error", "failure", "", ("outcome",), lambda e: e.outcome == "x")])
    assert hand_made.reads_field("text")


# -- event_from_dict / read_jsonl -----------------------------------------------------------------------------


def test_event_from_dict_discards_text_unread_but_still_checks_it() -> None:
    redactor = CountingRedactor()
    event = event_from_dict(doc(1, text=PII_TEXT), "t", redactor, keep_text=False)
    assert event.text is None and redactor.texts == [] and redactor.stats.get("EMAIL") is None
    kept = event_from_dict(doc(1, text=PII_TEXT), "t", redactor)
    assert kept.text is not None and "<EMAIL>" in kept.text and redactor.texts == [PII_TEXT]
    # Apart from the text, the same event.
    assert {**event.__dict__, "text": None} == {**kept.__dict__, "text": None}
    with pytest.raises(EventFormatError, match="'text': must be a string"):
        event_from_dict(doc(1, text=["not", "a", "string"]), "t", redactor, keep_text=False)
    with pytest.raises(EventFormatError, match="'text': longer than"):
        event_from_dict(doc(1, text="x" * (MAX_TEXT + 1)), "t", redactor, keep_text=False)
    assert redactor.texts == [PII_TEXT]


def test_read_jsonl_discards_and_counts_only_valid_texts(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [doc(1, text=PII_TEXT), doc(2), doc(3, text=""), doc(4, text=7), doc(5, text=PII_TEXT, escalated="y")]
    path.write_text("\n".join(json.dumps(d) for d in lines) + "\n")
    redactor, discarded = CountingRedactor(), DiscardedTexts()
    items = list(read_jsonl(path, "t", redactor, keep_text=False, discarded=discarded))
    events = [i for i in items if isinstance(i, DecisionEvent)]
    errors = [str(i) for i in items if not isinstance(i, DecisionEvent)]
    assert len(events) == 3 and all(e.text is None for e in events)
    assert errors == ["line 4: field 'text': must be a string",
                      "line 5: field 'escalated': must be true or false, got str"]
    assert discarded.total == 1 and redactor.texts == []  # only line 1 had a text of a valid event
    kept = [i for i in read_jsonl(path, "t", redactor, discarded=discarded) if isinstance(i, DecisionEvent)]
    assert kept[0].text is not None and "<EMAIL>" in kept[0].text and discarded.total == 1


# -- the collector ---------------------------------------------------------------------------------------------


def test_capture_off_discards_text_unredacted_and_counts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Collector(make_config(tmp_path)) as c:
        assert not c.keeps_text()
        redactions = spy_redactions(c, monkeypatch)
        recorded = spy_batches(c, monkeypatch)
        result = c.record_many([doc(1, text=PII_TEXT), doc(2), doc(3, text=PII_TEXT)])
        assert result.recorded == 3
        assert [e.text for e in recorded] == [None, None, None]
        assert redactions == [] and dict(c.redactor.stats) == {}
        status = c.status()
        assert status.texts_discarded == 2 and status.redaction == {}
        assert "texts_discarded" not in status.counters
        assert not (tmp_path / "replay.db").exists()  # keeps_text opened no replay set


def test_capture_off_still_refuses_malformed_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Collector(make_config(tmp_path)) as c:
        redactions = spy_redactions(c, monkeypatch)
        with pytest.raises(EventFormatError, match="'text': must be a string"):
            c.record_many([doc(1, text=PII_TEXT), doc(2, text={"a": 1})])
        with pytest.raises(EventFormatError, match="'text': longer than"):
            c.record(doc(3, text="y" * (MAX_TEXT + 1)))
        status = c.status()
        assert status.counters.get("events_recorded", 0) == 0
        assert status.texts_discarded == 0 and redactions == []  # a refused batch counts no discard


def test_capture_with_stored_text_redacts_and_stores_as_before(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write_replay_toml(tmp_path, enabled=True, store_text=True)
    with Collector(make_config(tmp_path)) as c:
        assert c.keeps_text()
        redactions = spy_redactions(c, monkeypatch)
        c.record_many([doc(1, text=PII_TEXT)])
        assert redactions == [PII_TEXT]
        status = c.status()
        assert status.texts_discarded == 0 and status.redaction.get("EMAIL") == 1
        (case,) = replay_agent.attached(c).replay_set.cases()
        assert case.text is not None and "<EMAIL>" in case.text and "jane.roe" not in case.text


def test_deferred_text_is_redacted_only_for_the_cases_capture_stores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_replay_toml(tmp_path, enabled=True, store_text=True)
    (tmp_path / "replay.toml").write_text((tmp_path / "replay.toml").read_text() + "per_category_cap = 2\n")
    with Collector(make_config(tmp_path)) as c:
        assert c.text_mode() == "defer" and c.keeps_text()
        redactions = spy_redactions(c, monkeypatch)
        recorded = spy_batches(c, monkeypatch)
        fine = {"tool_calls": [{"name": "lookup_order"}], "outcome": "success"}  # no failure: no case
        docs = [doc(1, text=PII_TEXT + " one"), doc(2, text=PII_TEXT + " two", **fine),
                doc(3, text=PII_TEXT + " three"), doc(4, text=PII_TEXT + " four")]
        result = c.record_many(docs)
        assert result.recorded == 4
        assert [e.text for e in recorded] == [None] * 4  # the events never carry the held text
        # Turns 1, 3 and 4 are tool_errors, the cap is 2: the batch's newest two are stored; turn 2 is no
        # failure and turn 1 is over the cap, so only the two stored texts were redacted.
        assert redactions == [PII_TEXT + " three", PII_TEXT + " four"]
        cases = sorted(replay_agent.attached(c).replay_set.cases(), key=lambda k: k.session_id)
        assert [k.session_id for k in cases] == ["s3", "s4"]
        assert all(k.text is not None and "<EMAIL>" in k.text and "jane.roe" not in k.text for k in cases)
        # Counted as soon as record_many returns: two redacted, two discarded unread.
        status = c.status()
        assert status.redaction.get("EMAIL") == 2 and status.texts_discarded == 2
        # A later batch over the cap (its cases younger than the refresh period) redacts nothing at all.
        c.record_many([doc(6, text=PII_TEXT)])
        assert len(redactions) == 2 and c.status().texts_discarded == 3
    for path in tmp_path.rglob("*"):  # the raw text reached no file
        if path.is_file():
            assert b"jane.roe" not in path.read_bytes(), path


def test_deferred_mode_refuses_a_malformed_batch_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_replay_toml(tmp_path, enabled=True, store_text=True)
    with Collector(make_config(tmp_path)) as c:
        redactions = spy_redactions(c, monkeypatch)
        with pytest.raises(EventFormatError, match="'text': must be a string"):
            c.record_many([doc(1, text=PII_TEXT), doc(2, text=["x"])])
        status = c.status()
        assert status.counters.get("events_recorded", 0) == 0 and status.texts_discarded == 0
        assert redactions == [] and replay_agent.attached(c).replay_set.cases() == []


def test_a_replay_taxonomy_reading_text_redacts_on_arrival(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_replay_toml(tmp_path, enabled=True, store_text=True)
    with Collector(make_config(tmp_path)) as c:
        replay_set = replay_agent.attached(c).replay_set
        monkeypatch.setattr(replay_set, "_taxonomy", text_taxonomy())
        assert c.text_mode() == "redact"
        recorded = spy_batches(c, monkeypatch)
        c.record_many([doc(1, text=PII_TEXT)])
        assert recorded[0].text == "please refund <EMAIL>, card <CREDIT_CARD>"


def test_capture_without_stored_text_still_discards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_replay_toml(tmp_path, enabled=True, store_text=False)
    with Collector(make_config(tmp_path)) as c:
        assert not c.keeps_text()
        redactions = spy_redactions(c, monkeypatch)
        c.record_many([doc(1, text=PII_TEXT)])
        (case,) = replay_agent.attached(c).replay_set.cases()  # the case is captured, without text
        assert case.text is None and redactions == [] and c.status().texts_discarded == 1


def test_a_taxonomy_reading_text_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Collector(make_config(tmp_path), taxonomy=text_taxonomy()) as c:
        assert c.keeps_text()
        redactions = spy_redactions(c, monkeypatch)
        recorded = spy_batches(c, monkeypatch)
        c.record_many([doc(1, text=PII_TEXT)])
        assert redactions == [PII_TEXT]
        assert recorded[0].text == "please refund <EMAIL>, card <CREDIT_CARD>"
        assert c.taxonomy.classify(recorded[0]) == {"policy_violation"}  # the rule saw the redacted text
        assert c.status().texts_discarded == 0


def test_the_decision_follows_a_replay_policy_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Collector(make_config(tmp_path)) as c:
        recorded = spy_batches(c, monkeypatch)
        mapper = c.otlp_mapper()
        c.record_many([doc(1, text=PII_TEXT)])
        mapper_events = mapper.map_traces(request(span(1, None, gen_ai__operation__name="invoke_agent",
                                                       fedsignal__text=PII_TEXT)))
        assert recorded[-1].text is None and mapper_events[0].text is None
        # The replay set is switched on with stored text (what a reload of replay.toml would do).
        on = ReplayConfig(replay_set=ReplaySetSettings(enabled=True, store_redacted_text=True))
        c._replay = CollectorReplay(c, on)  # type: ignore[attr-defined]  # replay_agent.attached's slot
        assert c.text_mode() == "defer"
        c.record_many([doc(2, text=PII_TEXT)])
        assert recorded[-1].text is None  # held aside, not on the event: capture stored it redacted
        (case,) = [k for k in replay_agent.attached(c).replay_set.cases() if k.session_id == "s2"]
        assert case.text is not None and "<EMAIL>" in case.text
        mapper_events = mapper.map_traces(request(span(2, None, gen_ai__operation__name="invoke_agent",
                                                       fedsignal__text=PII_TEXT)))
        # The OTLP turn's text is held beside its event, unredacted, for record_many.
        assert mapper_events[0].text is None
        held = mapper.take_held()
        assert len(held) == 1 and held[0][0] is mapper_events[0] and held[0][1] == PII_TEXT
        assert mapper.take_held() == []
        assert c.status().texts_discarded == 2  # one dict, one OTLP turn, before the change
        c.record_many(mapper_events, held=held)  # no failure in that turn: no case, never redacted
        assert c.status().texts_discarded == 3
        # ... and off again.
        replay_agent.close(c)
        assert not c.keeps_text()


def test_import_jsonl_discards_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in [doc(1, text=PII_TEXT), doc(2, text=3), doc(3, text=PII_TEXT)]))
    with Collector(make_config(tmp_path / "state")) as c:
        redactions = spy_redactions(c, monkeypatch)
        result = c.import_jsonl(path)
        assert (result.imported, result.errors) == (2, ((2, "field 'text': must be a string"),))
        assert redactions == [] and c.status().texts_discarded == 2


def test_status_shows_the_discarded_texts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "collector.toml"
    config.write_text('state_dir = "state"\ntenant_id = "tenant-1"\ncohort = "cohort-a"\n')
    with Collector(make_config(tmp_path / "state")) as c:
        c.record_many([doc(i, text=PII_TEXT) for i in range(3)])
    assert main(["agent", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "text:     3 free text(s) discarded unread" in out and "redacted: none" in out
    assert "counter:  texts_discarded" not in out


# -- OTLP -------------------------------------------------------------------------------------------------------


def test_otlp_mapper_discards_text_unread_and_counts_it() -> None:
    redactor = CountingRedactor()
    mapper = OtlpMapper("t", redactor, keep_text=False)
    (event,) = mapper.map_traces(request(
        span(1, None, gen_ai__operation__name="invoke_agent", fedsignal__text=PII_TEXT),
        span(2, 1, gen_ai__operation__name="execute_tool", gen_ai__tool__name="lookup", fedsignal__text="two")))
    assert event.text is None and redactor.texts == [] and mapper.discarded.total == 1  # one text per turn
    keeping = OtlpMapper("t", redactor)
    (event,) = keeping.map_traces(request(span(1, None, gen_ai__operation__name="invoke_agent",
                                               fedsignal__text=PII_TEXT)))
    assert event.text is not None and "<EMAIL>" in event.text and redactor.texts == [PII_TEXT]
    assert keeping.discarded.total == 0


def test_otlp_mapper_asks_its_decision_at_every_request_and_flush() -> None:
    keep = [False]
    shared = DiscardedTexts()
    clock = [0.0]
    mapper = OtlpMapper("t", CountingRedactor(), keep_text=lambda: keep[0], discarded=shared, pending_timeout=10,
                        clock=lambda: clock[0])
    # A child span whose root never comes: its turn is built at the flush, under the decision then.
    assert mapper.map_traces(request(span(5, 4, gen_ai__operation__name="invoke_agent",
                                          fedsignal__text=PII_TEXT))) == []
    keep[0] = True
    clock[0] = 60.0
    (event,) = mapper.flush()
    assert event.text is not None and "<EMAIL>" in event.text and shared.total == 0
    keep[0] = False
    (event,) = mapper.map_traces(request(span(7, None, gen_ai__operation__name="invoke_agent",
                                              fedsignal__text=PII_TEXT)))
    assert event.text is None and shared.total == 1


def test_otlp_mapper_holds_deferred_texts_only_for_the_call_that_made_them() -> None:
    redactor = CountingRedactor()
    mapper = OtlpMapper("t", redactor, keep_text=True, defer_text=lambda: True)
    (event,) = mapper.map_traces(request(span(1, None, gen_ai__operation__name="invoke_agent", fedsignal__text=PII_TEXT)))
    assert event.text is None and redactor.texts == []  # held, not redacted
    mapper.restore()  # the sink failed: the retry maps the turn again and holds its text anew
    assert mapper.take_held() == []
    (again,) = mapper.map_traces(request(span(1, None, gen_ai__operation__name="invoke_agent", fedsignal__text=PII_TEXT)))
    mapper.commit()
    assert mapper.take_held() == []  # a committed call's texts are gone
    # Without defer_text the same turn is redacted on arrival.
    eager = OtlpMapper("t", redactor, keep_text=True)
    (kept,) = eager.map_traces(request(span(1, None, gen_ai__operation__name="invoke_agent", fedsignal__text=PII_TEXT)))
    assert kept.text is not None and "<EMAIL>" in kept.text and eager.take_held() == []
