"""docs/config.md: generated from the config definitions, complete, and failing when they drift."""

from __future__ import annotations

import dataclasses
import difflib
import re

import pytest
from ml_collections import ConfigDict

from score_sde.jobs import config_reference
from score_sde.jobs.config import ConfigError, ExperimentConfig, to_config_dict
from score_sde.jobs.validation import from_config_dict

DEFAULTS = ExperimentConfig()
SECTIONS = [f.name for f in dataclasses.fields(DEFAULTS) if f.type.endswith("Config")]
TOP_LEVEL = [f.name for f in dataclasses.fields(DEFAULTS) if f.name not in SECTIONS]
STR_FIELDS = [
    f"{s}.{f.name}"
    for s in SECTIONS
    for f in dataclasses.fields(getattr(DEFAULTS, s))
    if f.type == "str"
]


def _cells(row: str) -> list[str]:
    """The cells of a markdown table row (``\\|`` is a pipe inside a cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def test_docs_config_md_is_what_the_definitions_render():
    written, rendered = config_reference.DOC.read_text(), config_reference.render()
    diff = "".join(
        list(
            difflib.unified_diff(
                written.splitlines(True), rendered.splitlines(True), "docs/config.md", "render()"
            )
        )[:40]
    )
    assert written == rendered, (
        f"docs/config.md is out of date with score_sde/jobs/config.py: run "
        f"`{config_reference.COMMAND}`.\n{diff}"
    )


def test_every_field_appears_once_with_its_default():
    """Each field of ``to_config_dict()`` has exactly one row, with its default and a meaning;
    the sections come in the order of the config."""
    lines = config_reference.DOC.read_text().splitlines()
    defaults = to_config_dict()
    fields = {f"{s}.{name}": value for s in SECTIONS for name, value in defaults[s].items()}
    fields |= {name: defaults[name] for name in TOP_LEVEL}
    for path, value in fields.items():
        rows = [line for line in lines if line.startswith(f"| `{path}` |")]
        assert len(rows) == 1, f"{path}: {len(rows)} rows in docs/config.md"
        value = value.to_dict() if isinstance(value, ConfigDict) else value
        _, _, default, meaning = _cells(rows[0])
        assert default == f"`{value!r}`", (
            f"{path}: {default} in docs/config.md, {value!r} in the config"
        )
        assert meaning, path
    headings = [line[4:-1] for line in lines if line.startswith("## `")]
    assert headings == SECTIONS
    assert set(SECTIONS) == {k for k, v in defaults.items() if isinstance(v, ConfigDict)}


@dataclasses.dataclass(frozen=True)
class _Commented:
    # a group header: ignored, the field below has its own comment
    a: int = 1  # a's meaning
    # b's meaning,
    # on two lines
    b: tuple[int, ...] = (1, 2)

    c: str = "#"


@dataclasses.dataclass(frozen=True)
class _Experiment:
    part: _Commented = dataclasses.field(default_factory=_Commented)
    seed: int = 0  # documented


def test_meanings_are_read_from_comments():
    assert config_reference.meanings(_Commented) == {
        "a": "a's meaning",
        "b": "b's meaning, on two lines",
        "c": "",
    }


def test_a_field_without_a_meaning_makes_render_raise():
    with pytest.raises(ValueError, match=r"config\.part\.c has no meaning: give _Commented\.c"):
        config_reference.render(_Experiment)


@pytest.mark.parametrize("path", STR_FIELDS)
def test_the_valid_names_listed_are_the_ones_validation_accepts(path):
    """A name field the validation rejects as unknown lists, in the page, the names it lists;
    a field it does not check by name lists none."""
    section, name = path.split(".")
    cfg = to_config_dict()
    setattr(cfg[section], name, "no_such_name")
    try:
        from_config_dict(cfg, device_count=1)
        message = ""
    except ConfigError as err:
        message = str(err)
    unknown = re.search(r"is unknown; (?:valid names: |use one of )(.*)", message)
    documented = config_reference.choices().get(path)
    if unknown is None:
        assert documented is None, f"{path}: no such check ({message!r})"
        return
    assert message.startswith(f"config.{path}="), message
    assert documented is not None, f"{path} is checked by name: add it to choices()"
    assert sorted(re.findall(r"\w+", unknown[1])) == sorted(documented)


def test_every_choice_is_a_name_field():
    assert set(config_reference.choices()) <= set(STR_FIELDS)
