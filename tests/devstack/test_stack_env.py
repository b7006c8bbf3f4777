"""Reading and rendering a stack env template (the real one is checked against Compose in
tests/stack/test_stack_env.py)."""

from __future__ import annotations

import pytest

from heart_mlops.devstack import stack_env

TEMPLATE = """# comment
A=plain

B = ${HOST}:${PORT}
C=${HOST}/${HOST}
"""


@pytest.fixture
def template(tmp_path):
    path = tmp_path / "stack.env.template"
    path.write_text(TEMPLATE)
    return path


def test_parse_skips_comments_and_blank_lines(template):
    assert stack_env.parse(template) == {
        "A": "plain",
        "B": "${HOST}:${PORT}",
        "C": "${HOST}/${HOST}",
    }
    assert stack_env.placeholders(template) == {"HOST", "PORT"}


def test_render_replaces_every_placeholder(template):
    rendered = stack_env.render({"HOST": "db", "PORT": 5432, "UNUSED": "x"}, template)
    assert rendered == {"A": "plain", "B": "db:5432", "C": "db/db"}


def test_render_names_what_is_missing(template):
    with pytest.raises(KeyError, match="no value for placeholder.s. PORT of"):
        stack_env.render({"HOST": "db"}, template)


def test_the_real_template_parses():
    assert stack_env.TEMPLATE.exists() and stack_env.placeholders()
