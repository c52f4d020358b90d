"""settings.py's docstring is the full table of variables: every setting has its row and every
row is a setting (the time limits: one pair per registered kind)."""

from __future__ import annotations

import re

import pytest
from pydantic import AliasChoices

import gloper_jobs.settings as settings_module
from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.jobs.kinds import KINDS
from gloper_jobs.settings import Settings

#: fields that are no variable of their own
NOT_VARIABLES = {"results_url": "GLOPER_RESULTS_DIR=s3://... sets it", "task_time_limits": "the per-kind rows"}


def _documented() -> set[str]:
    """The variable names that begin a row of the docstring's tables."""
    doc = settings_module.__doc__ or ""
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)\s", doc, re.M))


def _variables() -> set[str]:
    """Every variable the settings read: a field's own name, or its first alias."""
    names = set()
    for name, field in Settings.model_fields.items():
        if name in NOT_VARIABLES:
            continue
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.add(str(alias.choices[0]))
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"GLOPER_{name.upper()}")
    for kind in KINDS:
        names |= {f"GLOPER_{kind.upper()}_SOFT_TIME_LIMIT", f"GLOPER_{kind.upper()}_TIME_LIMIT"}
    return names


def test_every_setting_has_a_row_and_every_row_a_setting() -> None:
    documented, variables = _documented(), _variables()
    assert not variables - documented, f"settings without a row in settings.py's docstring: {variables - documented}"
    assert not documented - variables, f"rows of no setting (stale): {documented - variables}"


def test_a_kind_time_limit_needs_no_setting_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOPER_SOMEKIND_SOFT_TIME_LIMIT", "30")
    monkeypatch.setenv("GLOPER_SOMEKIND_TIME_LIMIT", "40")
    assert Settings.from_env().time_limit_overrides("somekind") == (30, 40)
    monkeypatch.setenv("GLOPER_SOMEKIND_TIME_LIMIT", "0")
    with pytest.raises(ConfigurationError, match="GLOPER_SOMEKIND_TIME_LIMIT: Input should be greater than 0"):
        Settings.from_env()
