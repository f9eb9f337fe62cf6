"""Read a Dockerfile and a .dockerignore the way ``docker build`` does, for tests that cannot build.

Enough of the format for this project's files: instructions with ``\\`` continuations and comment
lines, global ``ARG`` defaults (and ``--build-arg`` overrides) in ``FROM``, stages that build on
earlier stages, ``ENV`` with ``$VAR``/``${VAR}`` expansion, exec-form (JSON) ``CMD`` and
``HEALTHCHECK``. Anything else it meets is kept as text, not interpreted.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCKER_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Stage:
    """What one stage of a build leaves in its image's configuration."""

    base: str
    name: str | None = None
    env: dict[str, str] = field(default_factory=lambda: {"PATH": DOCKER_DEFAULT_PATH})
    workdir: str = "/"
    user: str = "root"
    runs: list[str] = field(default_factory=list)
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources, absolute destination)
    expose: list[str] = field(default_factory=list)
    healthcheck: dict | None = None  # {"options": {...}, "cmd": [...]}
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None


def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` pairs, continuation lines joined, comment lines dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue  # comments may sit between continuation lines, as Docker allows
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        words = (pending + line).strip().split(None, 1)
        result.append((words[0].upper(), words[1] if len(words) > 1 else ""))
        pending = ""
    return result


def expand(text: str, env: dict[str, str]) -> str:
    """Substitute ``$VAR`` and ``${VAR}`` from ``env`` (missing ones become empty, as in Docker)."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def exec_form(argument: str, what: str) -> list[str]:
    """A JSON-array argument; shell form is refused (signals would reach /bin/sh, not the server)."""
    try:
        value = json.loads(argument)
    except json.JSONDecodeError:
        raise ValueError(f"{what} must be in exec form (a JSON array), got {argument!r}") from None
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise ValueError(f"{what} must be a non-empty JSON array of strings, got {argument!r}")
    return value


def _apply(stage: Stage, keyword: str, argument: str) -> None:
    """Update ``stage`` with one instruction."""
    if keyword == "ENV":
        words = shlex.split(argument)
        pairs = [w.split("=", 1) for w in words] if "=" in words[0] else [[words[0], " ".join(words[1:])]]
        for key, value in pairs:
            stage.env[key] = expand(value, stage.env)
    elif keyword == "WORKDIR":
        stage.workdir = os.path.join(stage.workdir, expand(argument, stage.env))
    elif keyword == "USER":
        stage.user = expand(argument, stage.env)
    elif keyword == "RUN":
        stage.runs.append(argument)
    elif keyword in ("COPY", "ADD"):
        words = [w for w in shlex.split(argument) if not w.startswith("--")]
        destination = os.path.normpath(os.path.join(stage.workdir, words[-1]))
        stage.copies.append((words[:-1], destination + "/" if words[-1].endswith("/") else destination))
    elif keyword == "EXPOSE":
        stage.expose += argument.split()
    elif keyword == "CMD":
        stage.cmd = exec_form(argument, "CMD")
    elif keyword == "ENTRYPOINT":
        stage.entrypoint = exec_form(argument, "ENTRYPOINT")
    elif keyword == "HEALTHCHECK":
        head, _, command = argument.partition("CMD ")
        options = dict(re.findall(r"--([\w-]+)=(\S+)", head))
        stage.healthcheck = {"options": options, "cmd": exec_form(command.strip(), "HEALTHCHECK CMD")}


def read_image(path: Path, build_args: dict[str, str] | None = None) -> tuple[Stage, list[Stage], dict]:
    """The final stage of ``path`` built with ``build_args``, every stage, and the global ARGs."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, argument in instructions(path.read_text()):
        if keyword == "ARG" and not stages:
            name, _, default = argument.partition("=")
            global_args[name] = (build_args or {}).get(name, default)
        elif keyword == "FROM":
            words = expand(argument, global_args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            parent = next((s for s in stages if s.name == words[0]), None)
            stage = Stage(base=words[0], name=name)
            if parent is not None:  # a stage built on an earlier stage starts from its configuration
                stage = copy.deepcopy(parent)
                stage.base, stage.name = words[0], name
            stages.append(stage)
        elif stages:
            _apply(stages[-1], keyword, argument)
    return stages[-1], stages, global_args


# --- .dockerignore ------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's pattern syntax (Go's filepath.Match plus ``**``) as a regular expression."""
    pattern = os.path.normpath(pattern.strip().lstrip("/"))
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(path: Path) -> list[tuple[bool, re.Pattern, str]]:
    """``(is_exception, regex, pattern)`` for each rule of a .dockerignore file, in order."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pattern = os.path.normpath(line.lstrip("!").lstrip("/"))
            rules.append((line.startswith("!"), _pattern_regex(pattern), pattern))
    return rules


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern, str]]) -> bool:
    """Docker's rule: the last rule that matches the path or one of its parent folders decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for exception, regex, _ in rules:
        if any(regex.match(c) for c in candidates):
            ignored = not exception
    return ignored


def build_context(root: Path, rules: list[tuple[bool, re.Pattern, str]]) -> list[str]:
    """Relative paths of the files ``docker build root`` would send.

    Ignored folders that no exception rule reaches into (.venv/, runs/, .git/) are not walked.
    """
    files = []
    for folder, dirs, names in os.walk(root):
        base = os.path.relpath(folder, root).replace(os.sep, "/")
        base = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not is_ignored(base + d, rules)
                   or any(exc and pattern.startswith(base + d + "/") for exc, _, pattern in rules)]
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            if not is_ignored(relative, rules):
                files.append(relative)
    return sorted(files)
