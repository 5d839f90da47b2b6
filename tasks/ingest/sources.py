"""Find the documents under a source (folder, file, BEIR corpus.jsonl or any fsspec URL) and fingerprint them.

Listing reads no file (`list_source`: names, sizes, ETags, modification times); `discover` also reads and hashes
every file. Text extraction happens later, and only for new or changed documents.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import posixpath
import re
from collections.abc import Iterable, Iterator
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
    line: int = 0  # a JSONL record's line number; 0 for a whole file


FIRST_LINES = 5  # line numbers a record of grouped bad lines names


@dataclass
class _BadLines:
    first: Quarantined
    lines: list[int]
    count: int = 1


class Quarantine:
    """What a run skips. A file is one record; a JSONL file's bad lines are one record per reason class, with their
    count and first line numbers, so a file of a million bad lines costs a few records in memory, in the quarantine
    table and on screen. The ids of skipped records are kept apart (a stored document they name is not deleted)."""

    def __init__(self, records: Iterable[Quarantined] = ()) -> None:
        self._files: list[Quarantined] = []
        self._lines: dict[tuple[str, str], _BadLines] = {}
        self.skipped_ids: set[str] = set()
        self.count = 0  # inputs skipped: files plus bad lines
        for record in records:
            self.add(record)

    def add(self, record: Quarantined) -> None:
        """A skipped file (or an already grouped record)."""
        self._files.append(record)
        self.count += record.count
        if record.doc_id:
            self.skipped_ids.add(record.doc_id)

    def add_line(self, file: str, line: int, kind: str, reason: str, doc_id: str = "") -> None:
        """Bad line `line` of JSONL `file`: `kind` is its reason class (what groups it), `reason` says all."""
        self.count += 1
        if doc_id:
            self.skipped_ids.add(doc_id)
        group = self._lines.get((file, kind))
        if group is None:
            self._lines[(file, kind)] = _BadLines(Quarantined(f"{file}:{line}", reason, doc_id), [line])
            return
        group.count += 1
        if len(group.lines) < FIRST_LINES:
            group.lines.append(line)

    def add_item(self, item: SourceItem, kind: str, reason: str) -> None:
        """A found document skipped: a JSONL record joins its file's bad lines, a file is a record of its own."""
        if item.line:
            file = item.location.removesuffix(f":{item.line}")
            self.add_line(file, item.line, kind, reason, item.doc_id)
        else:
            self.add(Quarantined(item.location, reason, item.doc_id))

    def records(self) -> list[Quarantined]:
        """One record per skipped file, and one per file and reason class of bad lines (a lone bad line as it is)."""
        records = list(self._files)
        for (_, kind), group in self._lines.items():
            if group.count == 1:
                records.append(group.first)
                continue
            lines = ", ".join(map(str, group.lines)) + (", ..." if group.count > len(group.lines) else "")
            reason = f"{kind}: {group.count} lines ({lines}); the first: {group.first.reason}"
            records.append(Quarantined(group.first.location, reason, count=group.count))  # at the first bad line
        return records


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


def canonical_location(source: str) -> str:
    """A source's one spelling (an absolute, normalised path; a URL without a trailing slash): how a table's source
    registry knows it. BadSourceError when it does not exist."""
    return open_source(source)[2]


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
    id_prefix: str = ""  # the source's document-id namespace ("" for a table's first source; "<name>::" after)


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


def list_source(
    source: str, settings: Settings, id_prefix: str = ""
) -> tuple[Any, str, list[SourceFile], list[Quarantined]]:
    """List the files under `source` with their metadata, reading no file: (fs, canonical source, files, skipped).
    Document ids are paths relative to the source, after `id_prefix` (a table's second source's namespace)."""
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
        files.append(SourceFile(id_prefix + rel, info["name"], location, fmt, int(size), file_meta(info), id_prefix))
    return fs, canonical, files, quarantined


def listing_digest(files: list[SourceFile]) -> str:
    """A digest of a listing: every document id with its size and mtime (or ETag); equal digests, same listing."""
    lines = sorted(f"{f.doc_id}\t{f.meta}" for f in files)
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def discover(source: str, settings: Settings, id_prefix: str = "") -> Discovery:
    """List and fingerprint every document under `source` (reading every file); bad files become quarantine records."""
    fs, canonical, files, listed = list_source(source, settings, id_prefix)
    quarantine = Quarantine(listed)
    items: list[SourceItem] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            data = read_bytes(fs, file.name)
        except OSError as exc:
            quarantine.add(Quarantined(file.location, f"unreadable: {exc}", file.doc_id))
            continue
        for item in file_items(file, data, quarantine):
            if item.doc_id in seen:
                quarantine.add_item(item, DUPLICATE, duplicate_reason(item, seen[item.doc_id]))
            else:
                seen[item.doc_id] = item.location
                items.append(item)
    return Discovery(canonical, items, quarantine.records(), fs)


DUPLICATE = "duplicate doc_id"


def duplicate_reason(item: SourceItem, first: str | None = None) -> str:
    """Why a second document with an id already seen (at `first`, when known) is skipped."""
    return f"{DUPLICATE} {item.doc_id!r}" + (f" (first seen at {first})" if first else "")


def file_items(
    file: SourceFile, data: bytes, quarantine: Quarantine, first_line: int = 1, whole: bool = True
) -> Iterator[SourceItem]:
    """The documents in a file's bytes: the file itself, or one per record of a BEIR JSONL file (or of a part of
    it starting at line `first_line`; `whole` says the bytes are the entire file)."""
    if file.format != "beir":
        yield SourceItem(file.doc_id, file.location, file.format, hashlib.sha256(data).hexdigest(), size=len(data))
        return
    before = quarantine.count
    found = 0
    for item in _beir_items(data, file.location, quarantine, first_line, file.id_prefix):
        found += 1
        yield item
    if whole and found == 0 and quarantine.count == before:
        quarantine.add(Quarantined(file.location, "empty: no records in the JSONL file"))


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


def _lines(data: bytes) -> Iterator[bytes]:
    """The lines of `data` without their newline, one at a time (a list of a million lines costs tens of MB)."""
    for line in io.BytesIO(data):
        yield line.removesuffix(b"\n")


def _beir_items(
    data: bytes, location: str, quarantine: Quarantine, first_line: int = 1, id_prefix: str = ""
) -> Iterator[SourceItem]:
    """One item per valid BEIR corpus line (`_id`, `text`, optional `title` and `metadata`), its id after
    `id_prefix`; bad lines are grouped in `quarantine` by reason class."""
    for lineno, raw_line in enumerate(_lines(data), start=first_line):
        if not raw_line.strip():
            continue

        def bad(kind: str, reason: str, doc_id: str = "") -> None:
            quarantine.add_line(location, lineno, kind, reason, id_prefix + doc_id if doc_id else "")  # noqa: B023

        try:
            record = json.loads(raw_line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad("invalid UTF-8", f"invalid UTF-8 at byte {exc.start} of the line")
            continue
        except json.JSONDecodeError as exc:
            bad("malformed JSON", f"malformed JSON: {exc.msg} at column {exc.colno}")
            continue
        except (ValueError, RecursionError) as exc:  # an integer over 4300 digits, arrays nested too deep
            bad("malformed JSON", f"malformed JSON: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if not isinstance(record, dict):
            bad("not a JSON object", "not a JSON object")
            continue
        doc_id = record.get("_id")
        if not isinstance(doc_id, str | int) or str(doc_id).strip() == "":
            bad("missing or empty '_id'", "missing or empty '_id'")
            continue
        if not _is_utf8(json.dumps(record, ensure_ascii=False)):
            bad("invalid Unicode", "invalid Unicode: a lone surrogate (\\udXXX) escape in the record")
            continue
        doc_id = str(doc_id)
        problem = unsafe_id(doc_id)
        if problem:
            bad("unsafe '_id'", f"unsafe '_id' {doc_id[:100]!r}: {problem}")
            continue
        if not isinstance(record.get("text"), str):
            bad("missing or non-string 'text'", "missing or non-string 'text'", doc_id)
            continue
        metadata = record.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        metadata = {str(k): str(v) for k, v in metadata.items()}
        traversal = next((k for k, v in metadata.items() if ".." in re.split(r"[/\\]", v)), None)
        if traversal is not None:
            bad("unsafe metadata", f"unsafe metadata {traversal!r}: has a '..' path segment", doc_id)
            continue
        yield SourceItem(
            doc_id=id_prefix + doc_id,
            location=f"{location}:{lineno}",
            format="beir",
            content_hash=hashlib.sha256(f"beir{BEIR_EXTRACTION}|".encode() + raw_line.strip()).hexdigest(),
            record=record,
            metadata=metadata,
            size=len(raw_line),
            line=lineno,
        )
