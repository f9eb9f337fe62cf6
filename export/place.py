"""Where the bundle goes: a temporary folder beside the destination, renamed into place at the end.

A reader (the server, a second export) never sees half a bundle: a new destination appears whole
in one rename. With ``--force`` the old bundle is renamed aside, the new one renamed in, then the old
one deleted: for that instant the destination is missing, and a crash between the two renames
leaves the old bundle intact in ``.<name>.old-*`` beside it. A failed export deletes its temporary
folder and leaves the destination as it was.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from common.atomic import fsync_dir
from common.bundle import MANIFEST_FILE

from . import ExportError


def check_destination(out: Path, force: bool) -> None:
    """Refuse an existing ``out`` without ``force``, and anything but a bundle or empty folder with it."""
    if not (out.exists() or out.is_symlink()):
        return
    if not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    if not out.is_dir() or out.is_symlink():
        raise ExportError(f"{out} exists and is not a folder; refusing to replace it even with --force")
    if any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        # --force replaces bundles; it must not wipe a folder like ~ given by mistake.
        raise ExportError(f"{out} is a non-empty folder that is not a bundle (no {MANIFEST_FILE}); "
                          "refusing to replace it even with --force")


def missing_parents(out: Path) -> list[Path]:
    """The folders above ``out`` that do not exist yet (the export creates them), outermost first."""
    return [p for p in reversed(out.absolute().parents) if not p.exists()]


def make_temp(out: Path) -> Path:
    """Create the hidden temporary folder next to ``out`` (same file system, so rename is atomic)."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    created = missing_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        remove_empty(created)
        raise ExportError(f"cannot write the bundle in {out.parent}: {why_unwritable(out.parent, exc)}") from exc
    return tmp


def why_unwritable(folder: Path, exc: OSError) -> str:
    """Say which part of the path is the problem: a file in the way, or permissions."""
    blocker = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"{blocker} is a file, not a folder"
    return exc.strerror or str(exc)


def remove_empty(folders: list[Path]) -> None:
    """Remove folders this export created, innermost first, if nothing else was put in them."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def install(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old bundle is renamed aside first and deleted once the new one is in."""
    aside = None
    if out.exists():
        aside = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except OSError as exc:
        if aside is not None:
            os.rename(aside, out)  # put the old bundle back: the export failed, nothing changes
        raise ExportError(f"cannot move the bundle into {out}: {exc.strerror or exc}") from exc
    fsync_dir(out.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def discard(tmp: Path, created: list[Path]) -> None:
    """Delete a temporary folder, and the parent folders created for it, after a failure."""
    shutil.rmtree(tmp, ignore_errors=True)
    remove_empty(created)
