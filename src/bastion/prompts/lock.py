"""The lock file: every recorded version of every prompt, and the labels pointing at them.

Decisions:
- One YAML file (default ``<dir>/prompts.lock.yaml``), committed beside the prompts. Each version keeps
  its full spec, so a label can point at (and roll back to) a version whose file has changed since.
- Version numbers count up per prompt and are never reused; a spec whose hash is already recorded keeps
  its number (reverting a file does not make a new version).
- Each label keeps the versions it pointed at before (``label_history``, oldest first); rollback pops it.
- Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``) and deterministic
  (prompts, labels and keys in a fixed order), so the file diffs cleanly in review.
- A write is read-modify-write, so writers are serialised across processes too (two ``promote`` runs in
  CI at once must not lose a label): ``exclusive`` takes an advisory ``flock`` on the lock file's folder
  (no extra file to commit or ignore). Readers never lock; they see whole files thanks to ``os.replace``.
- Reading never writes. A lock file that fails validation (including a spec that no longer matches its
  recorded hash, i.e. a hand edit) is an error; it is never silently rewritten.
- The functions here are pure: they take a ``Lock`` and return a new one.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion import yamlfile

from .errors import PromptLabelError, PromptSpecError
from .spec import NAME_RE, readable, spec_hash, validate_spec

LOCK_FORMAT = 1
LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
RESERVED_LABELS = frozenset({"current", "latest"})
_HEADER = ("# Bastion prompt lock file: the recorded versions of each prompt and the labels pointing at them.\n"
           "# Written by `bastion prompts lock|promote|rollback`. Commit it with the prompts; do not edit by hand.\n")


@dataclass(frozen=True)
class LockedVersion:
    number: int
    digest: str  # full sha256 hex
    created_at: str  # ISO 8601 UTC
    spec: dict[str, Any]


@dataclass(frozen=True)
class LockedPrompt:
    versions: tuple[LockedVersion, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)
    history: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def by_number(self, number: int) -> LockedVersion | None:
        return next((v for v in self.versions if v.number == number), None)

    def by_digest(self, digest: str) -> LockedVersion | None:
        return next((v for v in self.versions if v.digest == digest), None)


Lock = dict[str, LockedPrompt]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_label(label: str) -> None:
    if not LABEL_RE.match(label) or label in RESERVED_LABELS:
        raise PromptLabelError(f"{label!r} is not a usable label: lower-case letters, digits, '-' and '_', "
                               f"starting with a letter, and not {' or '.join(sorted(RESERVED_LABELS))}",
                               status=400)


def with_version(lock: Lock, name: str, spec: dict[str, Any], created_at: str | None = None
                 ) -> tuple[Lock, LockedVersion | None]:
    """Record ``spec`` as the next version of ``name`` unless its hash is already recorded."""
    digest = spec_hash(spec)
    prompt = lock.get(name, LockedPrompt())
    if prompt.by_digest(digest) is not None:
        return lock, None
    number = max((v.number for v in prompt.versions), default=0) + 1
    version = LockedVersion(number, digest, created_at or now_iso(), spec)
    return {**lock, name: replace(prompt, versions=prompt.versions + (version,))}, version


def with_label(lock: Lock, name: str, label: str, number: int) -> Lock:
    """Point ``label`` at version ``number``, remembering where it pointed before."""
    check_label(label)
    prompt = lock[name]
    if prompt.by_number(number) is None:
        raise PromptLabelError(f"prompt {name!r} has no recorded version {number}", status=404)
    before = prompt.labels.get(label)
    if before == number:
        return lock
    history = dict(prompt.history)
    if before is not None:
        history[label] = history.get(label, ()) + (before,)
    return {**lock, name: replace(prompt, labels={**prompt.labels, label: number}, history=history)}


def rolled_back(lock: Lock, name: str, label: str) -> tuple[Lock, int]:
    """Point ``label`` back at the version it pointed at before the last promotion."""
    prompt = lock.get(name, LockedPrompt())
    past = prompt.history.get(label, ())
    if label not in prompt.labels:
        known = ", ".join(sorted(prompt.labels)) or "none"
        raise PromptLabelError(f"prompt {name!r} has no label {label!r} (labels: {known})", status=404)
    if not past:
        raise PromptLabelError(f"label {label!r} of prompt {name!r} has no earlier version to roll back to "
                               f"(it points at version {prompt.labels[label]} and its history is empty); "
                               f"use `bastion prompts promote {name}@VERSION {label}`")
    history = dict(prompt.history)
    if len(past) > 1:
        history[label] = past[:-1]
    else:
        history.pop(label)
    return {**lock, name: replace(prompt, labels={**prompt.labels, label: past[-1]}, history=history)}, past[-1]


def to_yaml(lock: Lock) -> str:
    prompts: dict[str, Any] = {}
    for name in sorted(lock):
        p = lock[name]
        entry: dict[str, Any] = {"labels": dict(sorted(p.labels.items()))}
        if p.history:
            entry["label_history"] = {k: list(v) for k, v in sorted(p.history.items())}
        entry["versions"] = [{"number": v.number, "hash": v.digest, "created_at": v.created_at,
                              "spec": readable(v.spec)} for v in sorted(p.versions, key=lambda v: v.number)]
        prompts[name] = entry
    return _HEADER + yamlfile.dump({"lock_version": LOCK_FORMAT, "prompts": prompts})


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the cross-process write lock of the lock file at ``path`` (blocking). Not re-entrant: take it
    once per write, around the read of the file as well as its replacement."""
    try:
        import fcntl
    except ImportError:  # not POSIX: in-process serialisation only
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def write_lock(path: Path, lock: Lock) -> None:
    """Replace the lock file atomically; readers see the old file or the new one, never half of one."""
    text = to_yaml(lock)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_lock(path: Path) -> Lock:
    """The lock file's content (empty if there is none); PromptSpecError listing its problems."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise PromptSpecError(f"{source}: cannot read the lock file: {e}") from None
    try:
        data, lines = yamlfile.load(text, source)
    except yamlfile.YamlError as e:
        raise PromptSpecError(e.problems) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or data.get("lock_version") != LOCK_FORMAT:
        raise PromptSpecError(f"{source}:1: not a Bastion prompt lock file (lock_version {LOCK_FORMAT}); restore it "
                              "from version control or delete it and run `bastion prompts lock`")
    prompts = data.get("prompts") or {}
    if not isinstance(prompts, dict):
        raise PromptSpecError(f"{yamlfile.where(source, lines, 'prompts')}: prompts must be a mapping")
    problems: list[str] = []
    lock: Lock = {}
    for name, entry in prompts.items():
        prompt = _read_prompt(str(name), entry, source, lines, problems)
        if prompt is not None:
            lock[str(name)] = prompt
    if problems:
        raise PromptSpecError(problems)
    return lock


def _read_prompt(name: str, entry: Any, source: str, lines: yamlfile.Lines, problems: list[str]) -> LockedPrompt | None:
    def at(*path: str | int) -> str:
        return f"{yamlfile.where(source, lines, 'prompts', name, *path)}: prompts.{name}" + "".join(f".{p}" for p in path)

    if not NAME_RE.match(name) or not isinstance(entry, dict):
        problems.append(f"{at()}: not a valid prompt entry")
        return None
    versions: list[LockedVersion] = []
    for i, v in enumerate(entry.get("versions") or []):
        if not (isinstance(v, dict) and isinstance(v.get("number"), int) and isinstance(v.get("hash"), str)
                and isinstance(v.get("created_at"), str) and isinstance(v.get("spec"), dict)):
            problems.append(f"{at('versions', i)}: a version needs number, hash, created_at and spec")
            continue
        if versions and v["number"] <= versions[-1].number:
            problems.append(f"{at('versions', i, 'number')}: version numbers must increase")
        if spec_hash(v["spec"]) != v["hash"]:
            problems.append(f"{at('versions', i, 'hash')}: the spec of version {v['number']} does not match its "
                            "hash (was the lock file edited by hand?); restore it from version control")
        problems += validate_spec(v["spec"], f"{source} ({name} version {v['number']})")
        versions.append(LockedVersion(v["number"], v["hash"], v["created_at"], v["spec"]))
    prompt = LockedPrompt(versions=tuple(versions))
    labels = entry.get("labels") or {}
    history = entry.get("label_history") or {}
    if not isinstance(labels, dict) or not isinstance(history, dict):
        problems.append(f"{at()}: labels and label_history must be mappings")
        return prompt
    for label, number in labels.items():
        if prompt.by_number(number) is None:
            problems.append(f"{at('labels', label)}: label {label!r} points at version {number!r}, "
                            "which is not recorded")
    for label, past in history.items():
        if not isinstance(past, list) or any(prompt.by_number(n) is None for n in past):
            problems.append(f"{at('label_history', label)}: must list recorded version numbers")
    return replace(prompt, labels={str(k): v for k, v in labels.items()},
                   history={str(k): tuple(v) for k, v in history.items() if isinstance(v, list)})
