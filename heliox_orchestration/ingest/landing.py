"""The FOCUS landing folder (``HELIOX_FOCUS_DIR``): which export files are new or changed.

A file is an export when its name ends in ``.csv``, ``.csv.gz`` or ``.parquet`` (any case), in
the folder or any sub-folder (AWS Data Exports nest theirs by billing period). Hidden files and
folders (a leading ``.``) and the names upload tools give unfinished files (``.tmp``, ``.part``,
``.partial``, ``.crdownload``, ``.filepart``, ``~``) are ignored; so is a file modified less than
``SETTLE_SECONDS`` ago (it may still be being written: copy files in under a temporary name and
rename them, which is atomic).

What was seen is a ``LandingState``: per file, its size, modification time (ns), the SHA-256 of
its content and its *version* (how many different contents that path has had). The Dagster
sensor keeps it as its cursor. A file is hashed (streamed, 1 MiB at a time) only when its size or
modification time differ from the state's, and at most ``hash_budget`` seconds of hashing are
done per call: the files not reached wait for the next call. A file is imported when:

* its path is new, or its content (hash) differs from what the state holds for that path: a
  changed file is imported again (version + 1);
* and no other current file has the same content: a copy of a file already seen is not imported
  twice (the same content dropped again under another name).

A file whose size or time changed but whose content did not (touched, copied over itself) is
only recorded. A file that disappears is forgotten. Nothing here imports Dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

EXPORT_SUFFIXES = (".csv", ".csv.gz", ".parquet")
UNFINISHED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".swp", "~")
SETTLE_SECONDS = 5.0
HASH_CHUNK_BYTES = 1 << 20
MAX_IMPORTS_PER_SCAN = 25


@dataclass(frozen=True)
class SeenFile:
    size: int
    mtime_ns: int
    sha256: str
    version: int


@dataclass
class LandingState:
    """Every export file seen in the folder (relative POSIX path -> what was seen)."""

    files: dict[str, SeenFile] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> LandingState:
        if not text:
            return cls()
        data = json.loads(text)
        return cls({path: SeenFile(*entry) for path, entry in data.get("files", {}).items()})

    def dump(self) -> str:
        files = {p: [f.size, f.mtime_ns, f.sha256, f.version] for p, f in sorted(self.files.items())}
        return json.dumps({"files": files}, separators=(",", ":"))


@dataclass(frozen=True)
class FoundFile:
    relative: str  # POSIX path inside the folder
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ExportToImport:
    relative: str
    size: int
    mtime_ns: int
    sha256: str
    version: int

    @property
    def run_key(self) -> str:
        """Unique per path, content and version: a run is requested once for each, and a
        content coming back (A, B, then A again) is a new version, imported again."""
        return f"focus:{self.relative}@{self.sha256[:16]}#v{self.version}"


@dataclass
class LandingPlan:
    imports: list[ExportToImport] = field(default_factory=list)
    unchanged: int = 0
    touched: list[str] = field(default_factory=list)  # new size or time, same content
    copies: list[tuple[str, str]] = field(default_factory=list)  # (file, the file it copies)
    settling: list[str] = field(default_factory=list)  # modified too recently
    deferred: list[str] = field(default_factory=list)  # over this call's hashing budget or count
    forgotten: list[str] = field(default_factory=list)  # gone from the folder
    state: LandingState = field(default_factory=LandingState)

    def summary(self) -> str:
        parts = [f"{len(self.imports)} to import", f"{self.unchanged} unchanged"]
        for name, items in (
            ("touched, same content", self.touched),
            ("copies of files already seen", self.copies),
            ("still being written", self.settling),
            ("left for the next scan", self.deferred),
            ("removed", self.forgotten),
        ):
            if items:
                parts.append(f"{len(items)} {name}")
        return ", ".join(parts)


def is_export(name: str) -> bool:
    lowered = name.lower()
    if lowered.startswith(".") or lowered.endswith(UNFINISHED_SUFFIXES):
        return False
    return lowered.endswith(EXPORT_SUFFIXES)


def scan_folder(folder: Path) -> list[FoundFile]:
    """Every export file under ``folder``, oldest first (then by path)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not is_export(name):
                continue
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue  # removed between listing and stat
            if not path.is_file():
                continue
            found.append(FoundFile(path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sorted(found, key=lambda f: (f.mtime_ns, f.relative))


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def plan_landing(
    folder: Path,
    state: LandingState,
    now: float,
    *,
    hash_budget: float,
    max_imports: int = MAX_IMPORTS_PER_SCAN,
    hasher: Callable[[Path], str] = file_sha256,
    monotonic: Callable[[], float] = time.monotonic,
) -> LandingPlan:
    """What to import from ``folder`` given what ``state`` saw; ``now`` in epoch seconds. The
    plan's ``state`` is the new one (the input is not changed)."""
    found = scan_folder(folder)
    present = {f.relative for f in found}
    plan = LandingPlan(forgotten=sorted(set(state.files) - present))
    files = {path: seen for path, seen in state.files.items() if path in present}
    started = monotonic()
    for item in found:
        seen = files.get(item.relative)
        if seen is not None and (seen.size, seen.mtime_ns) == (item.size, item.mtime_ns):
            plan.unchanged += 1
            continue
        if now - item.mtime_ns / 1e9 < SETTLE_SECONDS:
            plan.settling.append(item.relative)
            continue
        if len(plan.imports) >= max_imports or monotonic() - started > hash_budget:
            plan.deferred.append(item.relative)
            continue
        try:
            digest = hasher(folder / item.relative)
        except OSError:
            plan.deferred.append(item.relative)  # removed or unreadable meanwhile: look again
            continue
        if seen is not None and seen.sha256 == digest:
            files[item.relative] = SeenFile(item.size, item.mtime_ns, digest, seen.version)
            plan.touched.append(item.relative)
            continue
        version = seen.version + 1 if seen is not None else 1
        files[item.relative] = SeenFile(item.size, item.mtime_ns, digest, version)
        original = next((p for p, f in files.items() if f.sha256 == digest and p != item.relative), None)
        if original is not None:
            plan.copies.append((item.relative, original))
            continue
        plan.imports.append(ExportToImport(item.relative, item.size, item.mtime_ns, digest, version))
    plan.state = LandingState(files)
    return plan


def landing_file(folder: Path, relative: str) -> Path:
    """``relative`` inside ``folder``; ``ValueError`` when it is absolute or leads outside."""
    if Path(relative).is_absolute():
        raise ValueError(f"{relative!r} is not a path inside the landing folder ({folder})")
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ValueError(f"{relative!r} leads outside the landing folder ({folder})")
    return path
