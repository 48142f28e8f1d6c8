"""The prompt registry: the prompt files of one folder plus their lock file, behind one small facade.

Decisions:
- The registry holds one immutable snapshot (files, lock, errors, file stamps). ``reload_if_changed``
  builds a new snapshot and swaps it in with a single assignment, so ``resolve`` and ``render`` (called
  from the gateway's event loop) never see half a reload and need no lock. Writers (reload, lock, promote,
  rollback) are serialised by one ``threading.RLock``.
- Reloading is cheap: it stats the folder's ``*.yaml`` files and the lock file (inode, mtime, size) and
  reparses only what changed. It never raises: a broken file keeps the last good version of its prompt
  and its problem is in ``errors`` (file -> message) until it is fixed.
- ``NAME`` alone resolves to the ``production`` label if set, else the latest recorded version, else the
  current file: an edited but unlocked file is never served by accident.
- Deleting a prompt file does not delete its recorded versions: labels keep resolving from the lock.
- Writing commands re-read the lock file from disk (never trust a possibly stale snapshot) and refuse to
  touch a lock file that does not validate.
"""

from __future__ import annotations

import copy
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import diff as _diff
from . import lock as _lock
from .errors import PromptNotFound, PromptSpecError
from .render import bind, render_messages
from .spec import SpecFile, load_spec_file, spec_hash

if TYPE_CHECKING:
    from bastion.config.model import PromptsConfig

LOCK_NAME = "prompts.lock.yaml"
PRODUCTION = "production"
_HEX = re.compile(r"^[0-9a-f]+$")
_Stamp = tuple[int, int, int]


@dataclass(frozen=True)
class PromptVersion:
    name: str
    number: int | None  # None: the current file, not recorded in the lock file yet
    hash: str  # first 12 hex characters of the sha256
    spec: dict[str, Any]
    labels: tuple[str, ...]
    created_at: str | None = None  # when it was recorded (None when not recorded)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.number}" if self.number is not None else f"{self.name}@{self.hash}"


@dataclass(frozen=True)
class Rendered:
    name: str
    version: int | None
    hash: str
    ref: str  # "name@3", or "name@<hash>" for a version not recorded yet
    messages: list[dict[str, Any]]
    model: str | None
    params: dict[str, Any]
    response_format: dict[str, Any] | None


@dataclass(frozen=True)
class _Snapshot:
    stamps: dict[str, _Stamp] = field(default_factory=dict)
    files: dict[str, SpecFile] = field(default_factory=dict)  # name -> last good file
    lock: _lock.Lock = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file -> problem


class PromptRegistry:
    def __init__(self, directory: str | Path, lock_path: str | Path | None = None) -> None:
        self.directory = Path(directory)
        self.lock_path = Path(lock_path) if lock_path is not None else self.directory / LOCK_NAME
        self._state = _Snapshot()
        self._write = threading.RLock()
        self.reload_if_changed()

    @classmethod
    def from_config(cls, cfg: PromptsConfig) -> PromptRegistry:
        return cls(cfg.dir, cfg.lock)

    @property
    def errors(self) -> dict[str, str]:
        """Problems of the files as they are now (file -> message); their prompts keep the last good version."""
        return dict(self._state.errors)

    # -- loading ---------------------------------------------------------------------------------------

    def _scan(self) -> tuple[dict[str, _Stamp], list[Path]]:
        stamps: dict[str, _Stamp] = {}
        files: list[Path] = []
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            entries = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith((".yaml", ".yml")):
                continue
            path = self.directory / entry.name
            if entry.name.endswith(".lock.yaml") or path == self.lock_path:
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if entry.is_file():
                stamps[str(path)] = (st.st_ino, st.st_mtime_ns, st.st_size)
                files.append(path)
        try:
            st = self.lock_path.stat()
            stamps[str(self.lock_path)] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            pass
        return stamps, files

    def reload_if_changed(self) -> bool:
        """Re-read what changed on disk; True if anything did. Never raises for a bad file."""
        with self._write:
            old = self._state
            stamps, paths = self._scan()
            if stamps == old.stamps:
                return False
            files: dict[str, SpecFile] = {}
            errors: dict[str, str] = {}
            for path in paths:
                key, name = str(path), path.name.rsplit(".", 1)[0]
                if path.suffix == ".yml":
                    errors[key] = f"{key}: prompt files end in .yaml; rename it to {name}.yaml"
                    continue
                if old.stamps.get(key) == stamps[key]:
                    if name in old.files:
                        files[name] = old.files[name]
                    if key in old.errors:
                        errors[key] = old.errors[key]
                    continue
                try:
                    files[name] = load_spec_file(path)
                except PromptSpecError as e:
                    errors[key] = e.message
                    if name in old.files and old.files[name].path == path:
                        files[name] = old.files[name]
            lock_key = str(self.lock_path)
            lock = old.lock
            if old.stamps.get(lock_key) != stamps.get(lock_key):
                try:
                    lock = _lock.read_lock(self.lock_path)
                except PromptSpecError as e:
                    errors[lock_key] = e.message
            elif lock_key in old.errors:
                errors[lock_key] = old.errors[lock_key]
            self._state = _Snapshot(stamps=stamps, files=files, lock=lock, errors=errors)
            return True

    # -- reading ---------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        st = self._state
        return sorted(set(st.files) | {n for n, p in st.lock.items() if p.versions})

    def labels(self, name: str) -> dict[str, int]:
        st = self._state
        self._known(st, name)
        prompt = st.lock.get(name)
        return dict(prompt.labels) if prompt else {}

    def versions(self, name: str) -> list[PromptVersion]:
        """Every recorded version, oldest first, then the current file if it is not recorded yet."""
        st = self._state
        self._known(st, name)
        prompt = st.lock.get(name, _lock.LockedPrompt())
        out = [self._locked(name, prompt, v) for v in prompt.versions]
        current = self._current(st, name)
        if current is not None and current.number is None:
            out.append(current)
        return out

    def current(self, name: str) -> PromptVersion | None:
        """The prompt's file as it is now (its last good parse), or None if it has no valid file."""
        st = self._state
        self._known(st, name)
        return self._current(st, name)

    def resolve(self, ref: str) -> PromptVersion:
        """``name``, ``name@label``, ``name@3``, ``name@<hash prefix of 6+>``, ``name@current``, ``name@latest``."""
        name, at, sel = ref.partition("@")
        st = self._state
        self._known(st, name)
        prompt = st.lock.get(name, _lock.LockedPrompt())
        if at and not sel:
            raise PromptNotFound(f"{ref!r}: say which version after '@' ({self._choices(st, name)})")
        if not at:
            if PRODUCTION in prompt.labels:
                return self._locked(name, prompt, prompt.by_number(prompt.labels[PRODUCTION]))
            if prompt.versions:
                return self._locked(name, prompt, prompt.versions[-1])
            sel = "current"
        if sel == "current":
            current = self._current(st, name)
            if current is None:
                raise PromptNotFound(f"prompt {name!r} has no valid file{self._file_problem(st, name)}; "
                                     f"recorded: {self._choices(st, name)}")
            return current
        if sel == "latest" and prompt.versions:
            return self._locked(name, prompt, prompt.versions[-1])
        if sel.isdigit() and (version := prompt.by_number(int(sel))) is not None:
            return self._locked(name, prompt, version)
        if sel in prompt.labels:
            return self._locked(name, prompt, prompt.by_number(prompt.labels[sel]))
        if _HEX.match(sel.lower()) and (len(sel) >= 6 or not sel.isdigit()):
            return self._by_hash(st, name, prompt, sel.lower())
        raise PromptNotFound(f"prompt {name!r} has no version or label {sel!r} ({self._choices(st, name)})")

    def render(self, ref: str, variables: dict[str, Any]) -> Rendered:
        v = self.resolve(ref)
        shown = v.ref if ref == v.ref else f"{ref} ({v.ref})"
        messages = render_messages(v.spec, bind(v.spec, variables, shown), shown)
        spec = v.spec
        return Rendered(name=v.name, version=v.number, hash=v.hash, ref=v.ref, messages=messages,
                        model=spec.get("model"), params=copy.deepcopy(spec.get("params") or {}),
                        response_format=copy.deepcopy(spec.get("response_format")))

    def diff(self, a: str, b: str) -> str:
        va, vb = self.resolve(a), self.resolve(b)
        def title(ref: str, v: PromptVersion) -> str:
            return f"{ref} ({'version ' + str(v.number) if v.number is not None else 'not recorded'}, {v.hash})"

        return _diff.unified(va.spec, vb.spec, title(a, va), title(b, vb))

    # -- writing ---------------------------------------------------------------------------------------

    def lock(self, names: Iterable[str] | None = None) -> list[PromptVersion]:
        """Record every prompt file (or only those of ``names``) whose content is new; returns the versions
        added, by name. Refuses (PromptSpecError) while any of those files is invalid, writing nothing."""
        with self._write, _lock.exclusive(self.lock_path):
            self.reload_if_changed()
            st = self._state
            wanted = sorted(st.files) if names is None else sorted(set(names))
            for name in wanted:
                self._known(st, name)
            paths = None if names is None else {str(self.directory / f"{n}.yaml") for n in wanted}
            bad = [msg for key, msg in st.errors.items() if key != str(self.lock_path)
                   and (paths is None or key in paths)]
            if bad:
                raise PromptSpecError(bad)
            lock = _lock.read_lock(self.lock_path)
            added = []
            for name in wanted:
                if name not in st.files:
                    continue
                lock, version = _lock.with_version(lock, name, st.files[name].spec)
                if version is not None:
                    added.append((name, version))
            if added:
                self._save(lock)
            return [self._locked(n, lock[n], v) for n, v in added]

    def promote(self, name: str, version: int | str, label: str) -> None:
        """Point ``label`` at a version (a number, label, hash prefix or ``current``). The current file is
        recorded first if that is what is promoted; any other version must already be recorded."""
        _lock.check_label(label)
        with self._write, _lock.exclusive(self.lock_path):
            self.reload_if_changed()
            lock = _lock.read_lock(self.lock_path)
            target = self.resolve(f"{name}@{version}")
            number = target.number
            if number is None:
                lock, _ = _lock.with_version(lock, name, target.spec)
                recorded = lock[name].by_digest(spec_hash(target.spec))
                assert recorded is not None
                number = recorded.number
            self._save(_lock.with_label(lock, name, label, number))

    def rollback(self, name: str, label: str) -> int:
        """Point ``label`` back at the version it pointed at before; returns that version's number."""
        with self._write, _lock.exclusive(self.lock_path):
            self.reload_if_changed()
            self._known(self._state, name)
            lock, number = _lock.rolled_back(_lock.read_lock(self.lock_path), name, label)
            self._save(lock)
            return number

    def _save(self, lock: _lock.Lock) -> None:
        _lock.write_lock(self.lock_path, lock)
        st = self._state
        stamps = dict(st.stamps)
        s = self.lock_path.stat()
        stamps[str(self.lock_path)] = (s.st_ino, s.st_mtime_ns, s.st_size)
        errors = {k: v for k, v in st.errors.items() if k != str(self.lock_path)}
        self._state = _Snapshot(stamps=stamps, files=st.files, lock=lock, errors=errors)

    # -- helpers ---------------------------------------------------------------------------------------

    def _known(self, st: _Snapshot, name: str) -> None:
        if name in st.files or st.lock.get(name, _lock.LockedPrompt()).versions:
            return
        known = ", ".join(self.names()) or f"none (no prompt files in {self.directory})"
        raise PromptNotFound(f"no prompt named {name!r}{self._file_problem(st, name)}; known prompts: {known}")

    def _file_problem(self, st: _Snapshot, name: str) -> str:
        problem = st.errors.get(str(self.directory / f"{name}.yaml"))
        return f" (its file is invalid: {problem})" if problem else ""

    def _choices(self, st: _Snapshot, name: str) -> str:
        prompt = st.lock.get(name, _lock.LockedPrompt())
        labels = ", ".join(f"{k}={v}" for k, v in sorted(prompt.labels.items())) or "none"
        versions = ", ".join(str(v.number) for v in prompt.versions) or "none recorded"
        current = "current" if name in st.files else "no valid file"
        return f"labels: {labels}; versions: {versions}; {current}"

    def _by_hash(self, st: _Snapshot, name: str, prompt: _lock.LockedPrompt, prefix: str) -> PromptVersion:
        if len(prefix) < 6:
            raise PromptNotFound(f"prompt {name!r}: a hash prefix needs at least 6 characters, got {prefix!r}")
        found = {v.digest: self._locked(name, prompt, v) for v in prompt.versions if v.digest.startswith(prefix)}
        current = self._current(st, name)
        if current is not None and name in st.files and st.files[name].digest.startswith(prefix):
            found.setdefault(st.files[name].digest, current)
        if len(found) > 1:
            raise PromptNotFound(f"prompt {name!r}: hash prefix {prefix!r} is ambiguous "
                                 f"({', '.join(v.ref for v in found.values())}); give more characters")
        if not found:
            raise PromptNotFound(f"prompt {name!r} has no version with hash {prefix!r}... "
                                 f"({self._choices(st, name)})")
        return next(iter(found.values()))

    @staticmethod
    def _locked(name: str, prompt: _lock.LockedPrompt, v: _lock.LockedVersion | None) -> PromptVersion:
        assert v is not None  # labels and numbers are validated against the versions when the lock is read
        labels = tuple(sorted(k for k, n in prompt.labels.items() if n == v.number))
        return PromptVersion(name, v.number, v.digest[:12], v.spec, labels, v.created_at)

    def _current(self, st: _Snapshot, name: str) -> PromptVersion | None:
        f = st.files.get(name)
        if f is None:
            return None
        prompt = st.lock.get(name, _lock.LockedPrompt())
        recorded = prompt.by_digest(f.digest)
        if recorded is not None:
            return self._locked(name, prompt, recorded)
        return PromptVersion(name, None, f.digest[:12], f.spec, ())
