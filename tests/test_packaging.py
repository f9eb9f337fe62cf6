"""The package: one list of dependencies (pyproject.toml), locks compiled from it, entry points that run.

The server-only install is tested with the container (tests/test_container.py), the AI Studio
install with its docs (tests/test_deploy_docs.py).
"""
from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .packaging_helpers import LOCKS, declared, direct_entries, lock_extras, pins, project


def test_each_distribution_is_named_once():
    """A package added in one place is added everywhere: no name in two lists, so none can drift."""
    table, own = project(), canonicalize_name(project()["name"])
    lists = [table["dependencies"], *table["optional-dependencies"].values()]
    names = [canonicalize_name(Requirement(text).name) for texts in lists for text in texts]
    repeated = {name for name, count in Counter(n for n in names if n != own).items() if count > 1}
    assert not repeated, f"named in more than one list of pyproject.toml: {repeated}"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_lock_is_compiled_from_pyproject(lock: Path):
    """Every declared requirement of the lock's extras is pinned, within its range; nothing else is direct.

    After changing pyproject.toml, recompile the locks (README, "Dependencies").
    """
    extras = lock_extras(lock)
    wanted, locked = declared(extras), pins(lock)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock.name} lacks {requirement} (recompile it)"
        assert requirement.specifier.contains(locked[name], prereleases=True), \
            f"{lock.name} pins {name}=={locked[name]}, outside {requirement}"
    stale = direct_entries(lock) - {canonicalize_name(r.name) for r in wanted}
    assert not stale, f"{lock.name} holds {stale} for the project, which no longer asks for them (recompile it)"


def test_locks_agree_and_the_server_lock_holds_no_paddle():
    serve, full = pins(LOCKS[1]), pins(LOCKS[0])
    assert serve.items() <= full.items(), "the server's lock must use the full lock's versions"
    assert not {"paddlepaddle", "paddlepaddle-gpu"} & serve.keys(), "the image installs the CPU or GPU build itself"


def test_this_environment_is_the_lock():
    """The tests run on the locked versions (scripts/setup.sh installs them)."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    differ = {name: (version, installed.get(name)) for name, version in pins(LOCKS[0]).items()
              if installed.get(name) != version}
    assert not differ, f"locked vs installed: {differ}"


@pytest.mark.e2e
def test_the_package_is_installed_with_its_entry_points():
    """``pip install -e .`` made the metadata (the version the server reports) and one command per stage."""
    assert md.version(project()["name"]) == project()["version"]
    installed = {ep.name: ep for ep in md.entry_points(group="console_scripts")}
    for script, target in project()["scripts"].items():
        assert installed[script].value == target
        proc = subprocess.run([str(Path(sys.executable).parent / script), "--help"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (script, proc.stderr[-2000:])
