"""The toolkit's dependencies as declared (pyproject.toml) and as locked (requirements*.txt).

pyproject.toml is the one list of names and ranges; the locks are compiled from it by pip-tools,
and their header records the command (with the extras) that wrote them.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import ROOT

PYPROJECT = ROOT / "pyproject.toml"
LOCKS = (ROOT / "requirements.txt", ROOT / "requirements-serve.txt")


def project() -> dict:
    """The ``[project]`` table of pyproject.toml."""
    return tomllib.loads(PYPROJECT.read_text())["project"]


def declared(extras: list[str] | tuple[str, ...] = ()) -> list[Requirement]:
    """``dependencies`` and those of ``extras``, the project's references to its own extras expanded."""
    table, own = project(), canonicalize_name(project()["name"])
    found, todo, seen = [Requirement(text) for text in table["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in map(Requirement, table["optional-dependencies"][extra]):
            if canonicalize_name(requirement.name) == own:
                todo += sorted(requirement.extras)
            else:
                found.append(requirement)
    return found


def pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a lock's ``name==version`` lines."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version
    return found


def lock_extras(path: Path) -> list[str]:
    """The extras a lock was compiled for, from the pip-compile command in its header."""
    command = next(line for line in path.read_text().splitlines() if re.match(r"#\s+pip-compile ", line))
    assert command.rstrip().endswith(" pyproject.toml"), f"{path.name} is not compiled from pyproject.toml"
    return re.findall(r"--extra[= ](\w+)", command)


def direct_entries(path: Path) -> set[str]:
    """Canonical names a lock holds because the project itself asks for them (``# via paddle-d2s-toolkit``)."""
    own, current, direct = project()["name"], None, set()
    for line in path.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            current = canonicalize_name(line.split("==")[0])
        elif current and re.match(rf"\s+#\s+(via\s+)?{re.escape(own)}\b", line):
            direct.add(current)
    return direct
