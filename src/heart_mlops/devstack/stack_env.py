"""The distributed stack's settings, written once in deploy/stack.env.template.

Docker Compose renders it with service names, the Celery integration test with 127.0.0.1;
both go through `render`, so they agree key by key.
"""

from __future__ import annotations

import re
from pathlib import Path

from heart_mlops.settings import PROJECT_ROOT

TEMPLATE = PROJECT_ROOT / "deploy" / "stack.env.template"
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


def parse(path: Path = TEMPLATE) -> dict[str, str]:
    """Returns the KEY=VALUE lines of an env file (comments and blank lines skipped), values
    unrendered. Raises OSError when the file cannot be read."""
    entries = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries[key.strip()] = value.strip()
    return entries


def placeholders(path: Path = TEMPLATE) -> set[str]:
    """Returns the NAMEs of the ${NAME} placeholders in the file's values; raises as `parse`."""
    return {name for value in parse(path).values() for name in _PLACEHOLDER.findall(value)}


def render(values: dict[str, str], path: Path = TEMPLATE) -> dict[str, str]:
    """Returns the template's entries with every ${NAME} replaced by `values[NAME]`.

    Raises KeyError naming the placeholders `values` has no value for, OSError as `parse`.
    """
    missing = placeholders(path) - set(values)
    if missing:
        raise KeyError(f"no value for placeholder(s) {', '.join(sorted(missing))} of {path}")
    return {
        key: _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)
        for key, value in parse(path).items()
    }
