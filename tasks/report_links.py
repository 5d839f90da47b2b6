"""The URL a reviewer opens for a report file: `reports_url` (where `reports_dir` is served) plus the file's place in
`reports_dir`. `ragops server start` serves `reports_dir` locally and hands its URL to the commands and the worker
(RAGOPS_REPORTS_URL); another web server or a bucket's website can serve it just as well."""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from tasks.settings import Settings


def report_url(settings: Settings, html_path: str) -> str | None:
    """The URL of the report file `html_path` under `settings.reports_dir`, or None when there is none to give.

    None when `reports_url` is empty, or when the file is not inside `reports_dir` (the URL never climbs out of the
    served folder). A local `reports_dir` is compared as resolved paths (relative ones to the working directory, as
    the reports were written); an object-store `reports_dir` (s3://…) as text, and only with a `reports_url` set
    (a bucket is served by its own web endpoint, which ragops cannot guess).
    """
    base = settings.reports_url.strip()
    if not base:
        return None
    relative = _place_in(settings.reports_dir, html_path)
    if relative is None:
        return None
    return f"{base.rstrip('/')}/{quote(relative, safe='/')}"


def is_uri(location: str) -> bool:
    """True for an object-store or web URI (s3://, gs://, https://), False for a local path."""
    scheme = urlsplit(location).scheme
    return len(scheme) > 1  # a one-letter scheme is a Windows drive


def _place_in(folder: str, path: str) -> str | None:
    """`path` relative to `folder`, in `/`-separated form, or None when it is not strictly inside it."""
    if is_uri(folder):
        # Path() writes `s3://b/r` as `s3:/b/r`: accept both spellings of the folder
        prefixes = {folder.rstrip("/") + "/", str(PurePosixPath(folder)) + "/"}
        prefix = next((p for p in prefixes if path.startswith(p)), None)
        if prefix is None:
            return None
        relative = posixpath.normpath(path[len(prefix) :])
        if relative in (".", "") or relative == ".." or relative.startswith(("../", "/")):
            return None
        return relative
    if is_uri(path):
        return None
    try:
        relative_path = Path(path).expanduser().resolve().relative_to(Path(folder).expanduser().resolve())
    except ValueError:
        return None
    return None if relative_path == Path(".") else relative_path.as_posix()
