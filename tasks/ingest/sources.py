"""Find the documents under a source (folder, file, BEIR corpus.jsonl or any fsspec URL) and fingerprint them.

Listing reads no file (`list_source`: names, sizes, ETags, modification times); `discover` also reads and hashes
every file. Text extraction happens later, and only for new or changed documents.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tasks.errors import BadSourceError
from tasks.schemas import Quarantined
from tasks.settings import Settings

FORMATS = {
    ".md": "md",
    ".markdown": "md",
    ".txt": "txt",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "beir",
}

# Part of a BEIR record's hash: bump it when a record's extracted text changes, so tables holding the record
# re-chunk it (and nothing else). 2: the title starts the text (tasks/formats.titled_text).
BEIR_EXTRACTION = "2"


@dataclass
class SourceItem:
    """A document found in a source, fingerprinted but not yet parsed."""

    doc_id: str
    location: str
    format: str
    content_hash: str
    record: dict[str, Any] | None = None  # BEIR records carry their fields; files are re-read on extraction
    metadata: dict[str, str] = field(default_factory=dict)
    size: int = 0  # bytes read, to size the work before extraction


@dataclass
class Discovery:
    """Everything found under a source: usable items and what was skipped."""

    source: str
    items: list[SourceItem]
    quarantined: list[Quarantined]
    fs: Any = None


def open_source(source: str) -> tuple[Any, str, str]:
    """Return (filesystem, path, canonical source URI) for a path or URL."""
    try:
        fs, path = fsspec.core.url_to_fs(source)
    except (ImportError, ValueError) as exc:
        raise BadSourceError(
            f"cannot open source {source!r}: {exc} (install the fsspec backend for its scheme)"
        ) from exc
    if isinstance(fs, LocalFileSystem):
        # `..` segments are resolved here, like a URL's, so a root has one spelling and names under it have none
        path = posixpath.normpath(LocalFileSystem._strip_protocol(path))
        canonical = path
    else:
        canonical = source.rstrip("/")
    try:
        exists = fs.exists(path)
    except Exception as exc:  # remote filesystems raise their own errors for auth and network
        raise BadSourceError(f"cannot reach source {source!r}: {exc}") from exc
    if not exists:
        raise BadSourceError(f"source {source!r} does not exist")
    return fs, path, canonical


def matches(rel_path: str, patterns: list[str]) -> bool:
    """True when a relative POSIX path matches any glob pattern (`**/` also matches the top level)."""
    for pattern in patterns:
        if fnmatch.fnmatch(rel_path, pattern):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatch(rel_path, pattern[3:]):
            return True
    return False


def format_of(path: str) -> str | None:
    """The loader format for a file name, or None when ragops does not read it."""
    return FORMATS.get(posixpath.splitext(path)[1].lower())


@dataclass(frozen=True)
class SourceFile:
    """A file found under a source, listed but not read: its metadata decides whether it needs reading."""

    doc_id: str  # path relative to the source (the file itself for a one-file source)
    name: str  # the filesystem's path, for reading
    location: str  # path or URL, as stored and reported
    format: str
    size: int
    meta: str  # "etag:<ETag>" on object stores, "<size>:<mtime>" on file systems; "" when neither is known


def file_meta(info: dict[str, Any]) -> str:
    """What says a file changed without reading it: the object's ETag, else size and modification time."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag:{str(etag).strip(chr(34))}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    if mtime is None:
        return ""
    stamp = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
    return f"{info.get('size') or 0}:{stamp:.6f}"


def list_source(source: str, settings: Settings) -> tuple[Any, str, list[SourceFile], list[Quarantined]]:
    """List the files under `source` with their metadata, reading no file: (fs, canonical source, files, skipped)."""
    fs, root, canonical = open_source(source)
    files: list[SourceFile] = []
    quarantined: list[Quarantined] = []
    is_folder, listing = _list_files(fs, root)
    for rel, info in listing:
        if is_folder and matches(rel, settings.exclude):
            continue
        location = _location(fs, info["name"])
        if info.get("islink"):
            # Never followed: a link can lead out of the source, or back into it (a loop). Links to folders are
            # reported too, since the documents behind them would otherwise vanish without a word.
            if not is_folder or matches(rel, settings.include) or _is_dir(fs, info["name"]):
                quarantined.append(
                    Quarantined(
                        _printable(location),
                        "symbolic link: not followed (copy what it points to into the source)",
                        rel if _is_utf8(rel) else "",
                    )
                )
            continue
        if is_folder and not matches(rel, settings.include):
            continue
        if not _is_utf8(rel):
            quarantined.append(Quarantined(_printable(location), "file name is not valid UTF-8 (rename the file)"))
            continue
        fmt = format_of(info["name"])
        if fmt is None:
            quarantined.append(Quarantined(location, "unsupported file type"))
            continue
        if info.get("type") != "file":
            quarantined.append(Quarantined(location, f"not a regular file ({info.get('type')})", rel))
            continue
        size = info.get("size") or 0
        if size > settings.max_file_bytes:
            quarantined.append(
                Quarantined(location, f"oversized: {size} bytes > max_file_bytes {settings.max_file_bytes}", rel)
            )
            continue
        files.append(SourceFile(rel, info["name"], location, fmt, int(size), file_meta(info)))
    return fs, canonical, files, quarantined


def discover(source: str, settings: Settings) -> Discovery:
    """List and fingerprint every document under `source` (reading every file); bad files become quarantine records."""
    fs, canonical, files, quarantined = list_source(source, settings)
    items: list[SourceItem] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            data = read_bytes(fs, file.name)
        except OSError as exc:
            quarantined.append(Quarantined(file.location, f"unreadable: {exc}", file.doc_id))
            continue
        for item in file_items(file, data, quarantined):
            if item.doc_id in seen:
                quarantined.append(duplicate(item, seen[item.doc_id]))
            else:
                seen[item.doc_id] = item.location
                items.append(item)
    return Discovery(canonical, items, quarantined, fs)


def duplicate(item: SourceItem, first: str) -> Quarantined:
    """The record of a second document with an id already seen."""
    return Quarantined(item.location, f"duplicate doc_id {item.doc_id!r} (first seen at {first})", item.doc_id)


def file_items(
    file: SourceFile, data: bytes, quarantined: list[Quarantined], first_line: int = 1, whole: bool = True
) -> Iterator[SourceItem]:
    """The documents in a file's bytes: the file itself, or one per record of a BEIR JSONL file (or of a part of
    it starting at line `first_line`; `whole` says the bytes are the entire file)."""
    if file.format != "beir":
        yield SourceItem(file.doc_id, file.location, file.format, hashlib.sha256(data).hexdigest(), size=len(data))
        return
    before = len(quarantined)
    found = 0
    for item in _beir_items(data, file.location, quarantined, first_line):
        found += 1
        yield item
    if whole and found == 0 and len(quarantined) == before:
        quarantined.append(Quarantined(file.location, "empty: no records in the JSONL file"))


def read_bytes(fs: Any, path: str) -> bytes:
    """Read a whole file through fsspec, as OSError on any failure."""
    try:
        with fs.open(path, "rb") as handle:
            return handle.read()
    except OSError:
        raise
    except Exception as exc:  # fsspec backends wrap their errors inconsistently
        raise OSError(str(exc)) from exc


def _is_utf8(text: str) -> bool:
    """False when text cannot be stored: undecodable file-name bytes (surrogate escapes), lone JSON surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """A file name's undecodable bytes as \\xNN escapes, so the quarantine record can be stored."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unsafe_id(doc_id: str) -> str | None:
    """Why a record's id could be taken for a path outside the source, or None when it is safe."""
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in doc_id):
        return "contains a NUL or control character"
    if "\\" in doc_id:
        return "contains a backslash"
    if doc_id.startswith("/"):
        return "is an absolute path"
    if ".." in doc_id.split("/"):
        return "has a '..' path segment"
    return None


def _is_dir(fs: Any, path: str) -> bool:
    try:
        return bool(fs.isdir(path))
    except Exception:  # a dangling link or a loop is no folder
        return False


def _location(fs: Any, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _list_files(fs: Any, root: str) -> tuple[bool, list[tuple[str, dict[str, Any]]]]:
    """Whether the source is a folder, and (relative path, info) for each file in it (or the file itself)."""
    info = _info(fs, root)
    if info.get("type") != "directory":
        return False, [(posixpath.basename(root.rstrip("/")), info)]
    found = fs.find(root, detail=True, withdirs=False)
    prefix = root.rstrip("/") + "/"
    return True, [
        (name[len(prefix) :] if name.startswith(prefix) else posixpath.basename(name), found[name])
        for name in sorted(found)
    ]


def _info(fs: Any, path: str) -> dict[str, Any]:
    try:
        return dict(fs.info(path))
    except Exception as exc:
        raise BadSourceError(f"cannot stat source {path!r}: {exc}") from exc


def _beir_items(
    data: bytes, location: str, quarantined: list[Quarantined], first_line: int = 1
) -> Iterator[SourceItem]:
    """One item per valid BEIR corpus line (`_id`, `text`, optional `title` and `metadata`)."""
    for lineno, raw_line in enumerate(data.split(b"\n"), start=first_line):
        if not raw_line.strip():
            continue
        where = f"{location}:{lineno}"
        try:
            record = json.loads(raw_line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            quarantined.append(Quarantined(where, f"invalid UTF-8 at byte {exc.start} of the line"))
            continue
        except json.JSONDecodeError as exc:
            quarantined.append(Quarantined(where, f"malformed JSON: {exc.msg} at column {exc.colno}"))
            continue
        except (ValueError, RecursionError) as exc:  # an integer over 4300 digits, arrays nested too deep
            quarantined.append(Quarantined(where, f"malformed JSON: {type(exc).__name__}: {str(exc)[:200]}"))
            continue
        if not isinstance(record, dict):
            quarantined.append(Quarantined(where, "not a JSON object"))
            continue
        doc_id = record.get("_id")
        if not isinstance(doc_id, str | int) or str(doc_id).strip() == "":
            quarantined.append(Quarantined(where, "missing or empty '_id'"))
            continue
        if not _is_utf8(json.dumps(record, ensure_ascii=False)):
            quarantined.append(Quarantined(where, "invalid Unicode: a lone surrogate (\\udXXX) escape in the record"))
            continue
        doc_id = str(doc_id)
        problem = unsafe_id(doc_id)
        if problem:
            quarantined.append(Quarantined(where, f"unsafe '_id' {doc_id[:100]!r}: {problem}"))
            continue
        if not isinstance(record.get("text"), str):
            quarantined.append(Quarantined(where, "missing or non-string 'text'", doc_id))
            continue
        metadata = record.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        metadata = {str(k): str(v) for k, v in metadata.items()}
        traversal = next((k for k, v in metadata.items() if ".." in re.split(r"[/\\]", v)), None)
        if traversal is not None:
            quarantined.append(Quarantined(where, f"unsafe metadata {traversal!r}: has a '..' path segment", doc_id))
            continue
        yield SourceItem(
            doc_id=doc_id,
            location=where,
            format="beir",
            content_hash=hashlib.sha256(f"beir{BEIR_EXTRACTION}|".encode() + raw_line.strip()).hexdigest(),
            record=record,
            metadata=metadata,
            size=len(raw_line),
        )
