"""The versioned data files (taxonomy, signal schema template and versions, rollout plans) refuse typo'd or mistyped keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from aggregation.rollout_plan import RolloutPlan, RolloutPlanError, RolloutPlans
from aggregation.schema import (
    SchemaError,
    SignalSchema,
    default_schema,
    default_schema_document,
    load_template,
)
from aggregation.taxonomy import Taxonomy, TaxonomyError


def shipped_taxonomy() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(resources.files("aggregation").joinpath("data/taxonomy_v1.json").read_text())
    return doc


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def refused(tmp_path: Path, doc: Any, load: Callable[[Path], object], error: type[Exception]) -> tuple[Path, str, str]:
    """``doc`` written as indented JSON and loaded: the file, its text and the message it is refused with."""
    path = tmp_path / "data.json"
    text = json.dumps(doc, indent=2)
    path.write_text(text)
    with pytest.raises(error) as err:
        load(path)
    return path, text, str(err.value)


def test_a_misspelt_category_key_is_refused_with_its_name_and_line(tmp_path: Path) -> None:
    doc = shipped_taxonomy()
    doc["categories"][1]["raeds"] = doc["categories"][1].pop("reads")
    path, text, message = refused(tmp_path, doc, Taxonomy.load, TaxonomyError)
    line = line_of(text, '"raeds"')
    assert f"{path}:{line}: categories[1].raeds: unknown key (did you mean reads?)" in message
    assert "categories[1].reads: required key is missing" in message


def test_a_mistyped_taxonomy_value_is_refused_not_coerced(tmp_path: Path) -> None:
    doc = shipped_taxonomy()
    doc["version"] = 1
    doc["categories"][0]["kind"] = "failur"
    path, text, message = refused(tmp_path, doc, Taxonomy.load, TaxonomyError)
    line = line_of(text, '"version"')
    assert f"{path}:{line}: version:" in message
    assert "categories[0].kind:" in message


def test_the_shipped_files_load() -> None:
    assert Taxonomy.load().version == "1.0.0"
    template = default_schema_document()
    assert template["window_seconds"] == 3600 and "cohort" not in template
    assert default_schema("c1").window_seconds == 3600


def test_a_misspelt_schema_template_key_is_refused_with_its_line() -> None:
    text = resources.files("aggregation").joinpath("data/schema_template.json").read_text()
    typo = text.replace('"max_cells_per_unit"', '"max_cels_per_unit"')
    with pytest.raises(SchemaError) as err:
        load_template(typo, source="schema_template.json")
    line = line_of(typo, '"max_cels_per_unit"')
    assert f"schema_template.json:{line}: max_cels_per_unit: unknown key (did you mean max_cells_per_unit?)" in str(
        err.value)


def test_a_mistyped_schema_version_is_refused() -> None:
    doc = default_schema("c1").to_dict()
    doc["window_seconds"] = "3600"
    with pytest.raises(SchemaError, match="window_seconds"):
        SignalSchema.from_json(json.dumps(doc, indent=1))
    doc["window_seconds"] = 3600
    doc["privacy_unt"] = "user"
    with pytest.raises(SchemaError, match="privacy_unt: unknown key"):
        SignalSchema.from_dict(doc)


def shipped_plans_text() -> str:
    return resources.files("aggregation").joinpath("data/rollout_plans_v1.json").read_text()


def test_a_misspelt_key_in_a_rollout_plans_file_is_refused_with_its_name_line_and_a_suggestion(
        tmp_path: Path) -> None:
    doc = json.loads(shipped_plans_text())
    stage = doc["plans"]["high"]["stages"][0]
    stage["min_windws"] = stage.pop("min_windows")
    path, text, message = refused(tmp_path, doc, RolloutPlans.load, RolloutPlanError)
    line = line_of(text, '"min_windws"')
    assert f"{path}:{line}: plans.high.stages[0].min_windws: unknown key (did you mean min_windows?)" in message


def test_a_mistyped_value_in_a_rollout_plans_file_is_refused_not_coerced(tmp_path: Path) -> None:
    doc = json.loads(shipped_plans_text())
    doc["plans"]["critical"]["alpha"] = "0.05"
    doc["intent_scoped_kinds"] = "routing_rule"
    path, text, message = refused(tmp_path, doc, RolloutPlans.load, RolloutPlanError)
    critical = text.index('"critical": {\n      "alpha"')
    alpha_line = text[: text.index('"alpha"', critical)].count("\n") + 1
    assert f"{path}:{alpha_line}: plans.critical.alpha: input should be a valid number, got the string '0.05'" in message
    kinds_line = line_of(text, '"intent_scoped_kinds"')
    assert f"{path}:{kinds_line}: intent_scoped_kinds:" in message


def test_a_mistyped_reviewer_override_names_the_key_and_its_line() -> None:
    doc = RolloutPlans.load().for_risk_class("low").to_dict()
    doc["stages"][0]["min_windows"] = True  # a boolean is not a number of windows
    text = json.dumps(doc, indent=2)
    with pytest.raises(RolloutPlanError) as err:
        RolloutPlan.from_json(text, risk_class="low")
    line = line_of(text, '"min_windows"')
    assert f"rollout plan (low):{line}: stages[0].min_windows:" in str(err.value)
