"""Golden-set item checks that must not pass wrong items: negations, answers without content, stems shared by a
paraphrase, and the same checks in generation, served-query drafts, `golden review` and `golden check`.

Every expected outcome is written out by hand; stems are those of the Snowball English reference vocabulary."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evaluations.golden import Evidence, GoldenQuestion, read_golden_set, write_golden_set
from evaluations.golden_checks import content_words, item_failures, lexical_support, shared_words, stem
from evaluations.golden_generate import Dropped, draft_item, served_query_drafts
from evaluations.golden_sampling import SourceChunk
from flows.cli import app

runner = CliRunner()

ZLIB = "The zlib module compresses data using the DEFLATE algorithm."
GZIP = "The gzip module does not support random access to multi-member archives."
PROVIDES = "The zlib module provides compression"
PAGE = f"{ZLIB} {GZIP} {PROVIDES} for programs that store data."
SUPPORTED = '{"supported": true, "reason": "stated"}'


def flat(text: str) -> str:
    return " ".join(text.split())


class Scripted:
    """A chat stand-in returning its replies in order (the support check always says yes)."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.replies.pop(0)


def reply(question: str, answer: str, passage: str) -> str:
    return json.dumps({"question": question, "answer": answer, "evidence": [{"passage": 1, "text": passage}]})


def draft(kind: str, question: str, answer: str, passage: str) -> object:
    """What draft_item makes of this reply (the LLM support check says yes): a kept item, or the reason dropped."""
    chunk = SourceChunk(chunk_id="p-0", doc_id="p.md", section="", text=PAGE, position=0)
    try:
        return draft_item(kind, [chunk], {"p.md": [PAGE]}, Scripted(reply(question, answer, passage), SUPPORTED))
    except Dropped as dropped:
        return dropped.reason


# stems and content words


def test_snowball_joins_inflections_and_the_derived_noun() -> None:
    # given the words a paraphrase check must see as one
    # then each family has one stem (Snowball English reference vocabulary)
    assert {stem(w) for w in ("module", "modules")} == {"modul"}
    assert {stem(w) for w in ("compress", "compression", "compressed", "compressing", "compresses")} == {"compress"}


def test_every_negation_is_one_content_word() -> None:
    assert content_words("zlib doesn't compress, it never will") == {"zlib", "not", "compress"}
    assert content_words("No module cannot work without data") == {"not", "modul", "work", "data"}
    assert content_words("It isn’t, nor is it nothing.") == {"not"}


def test_an_answer_without_a_content_word_has_no_lexical_support() -> None:
    for answer in ("Yes.", "No", "It does.", "Not at all."):
        assert lexical_support(answer, [ZLIB]) == 0.0, answer


def test_a_paraphrase_sharing_a_stem_with_its_evidence_shares_words() -> None:
    assert shared_words("Which modules compress data?", [PROVIDES]) == {"modul", "compress"}


# draft_item: the generation path drops what fails, with the reason


@pytest.mark.parametrize(
    ("kind", "question", "answer", "passage", "expected"),
    [
        # the answer negates what its evidence states
        ("factoid", "Which algorithm does zlib use?", "The zlib module does not use the DEFLATE algorithm.", ZLIB,
         "answer's negation differs from its evidence"),
        # the answer states what its evidence negates
        ("factoid", "Can gzip seek in multi-member archives?",
         "The gzip module supports random access to multi-member archives.", GZIP,
         "answer's negation differs from its evidence"),
        # no content word
        ("factoid", "Does zlib use DEFLATE?", "Yes.", ZLIB, "answer has no content word"),
        ("factoid", "Does zlib use DEFLATE?", "It does.", ZLIB, "answer has no content word"),
        ("factoid", "Can gzip seek in multi-member archives?", "No", GZIP, "answer has no content word"),
        # module/modules and compress/compression are the evidence's words
        ("paraphrase", "Which modules compress data?", "The zlib module provides compression.", PROVIDES,
         "paraphrase shares words with its evidence"),
        # consistent negation and plain support are kept
        ("factoid", "Can gzip seek in multi-member archives?",
         "No: the gzip module does not support random access to multi-member archives.", GZIP, "kept"),
        ("factoid", "Which algorithm does zlib use?", "The zlib module uses the DEFLATE algorithm.", ZLIB, "kept"),
        ("paraphrase", "Which library shrinks bytes?", "The zlib module provides compression.", PROVIDES, "kept"),
    ],
)  # fmt: skip
def test_draft_item_drops_wrong_answers_and_paraphrases(
    kind: str, question: str, answer: str, passage: str, expected: str
) -> None:
    got = draft(kind, question, answer, passage)
    assert (got if isinstance(got, str) else "kept") == expected


# item_failures: every failure of one item, in order


def test_item_failures_lists_every_check_an_item_fails() -> None:
    item = GoldenQuestion(
        id="q1",
        question="Which modules compress data?",
        kind="paraphrase",
        reference_answer="Yes.",
        evidence=[Evidence(doc_id="p.md", passage=PROVIDES), Evidence(doc_id="gone.md", passage=ZLIB)],
    )
    failures = item_failures(item, {"p.md": PAGE})
    assert [f.reason for f in failures] == [
        "citation not in its document",
        "paraphrase shares words with its evidence",
        "answer has no content word",
    ]
    assert str(failures[0]) == "citation not in its document: unknown document 'gone.md'"
    # without document texts (review: the evidence was not edited) citations are not looked up
    assert item_failures(item, None)[0].reason == "paraphrase shares words with its evidence"
    unanswerable = GoldenQuestion(id="u", question="Who wrote zlib?", kind="unanswerable", reference_answer="No.")
    assert item_failures(unanswerable, {}) == []


# served-query drafts: the served answer is checked like any other


def hashed_embedding(texts: list[str]) -> np.ndarray:
    """Unit vectors, one random direction per distinct text (distinct texts are far from near-duplicates)."""
    rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=256) for t in texts]
    vectors = np.array(rows)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_served_answers_that_fail_the_checks_are_dropped_with_the_reason() -> None:
    # given four served queries over a chunk of one sentence, with the answers the service gave
    texts = {"c1": f"p.md\0{ZLIB}"}
    served = {
        "s1": ("Which algorithm does zlib use?", "The zlib module uses the DEFLATE algorithm."),
        "s2": ("Does zlib use DEFLATE?", "The zlib module does not use the DEFLATE algorithm."),
        "s3": ("What does gzip rely on?", "Gzip archives rely on Huffman trees and checksums."),
        "s4": ("Is DEFLATE what zlib uses?", "Yes."),
        "s5": ("What is zlib's algorithm?", None),
    }
    rows = [{"query_id": q, "question": text, "answer": answer, "retrieved_ids": ["c1"]}
            for q, (text, answer) in served.items()]  # fmt: skip
    # when drafts are made from them
    drafts, dropped, examples = served_query_drafts(rows, texts, hashed_embedding, {})
    # then only answers that pass the item checks are kept (no answer served: the evidence sentence is the answer)
    assert [d.id for d in drafts] == ["served-s1", "served-s5"]
    assert drafts[1].reference_answer == ZLIB
    assert dropped == Counter(
        {
            "answer's negation differs from its evidence": 1,
            "answer not supported (lexical floor)": 1,
            "answer has no content word": 1,
        }
    )
    assert examples["answer has no content word"] == "served-s4: 'Yes.'"
    assert examples["answer not supported (lexical floor)"].startswith("served-s3: 0.")


# the CLI: review and check run the same checks


def write_set(path: Path, answers: dict[str, str], status: str | None = None) -> None:
    items = [
        GoldenQuestion(
            id=qid,
            question=f"Question {qid} about zlib?",
            kind="factoid",
            reference_answer=answer,
            evidence=[Evidence(doc_id="p.md", passage=ZLIB)],
            status=status,
        )
        for qid, answer in answers.items()
    ]
    write_golden_set(path, items, {"version": 1})


def test_golden_check_reports_an_item_edited_to_a_wrong_answer_and_exits_non_zero(tmp_path: Path) -> None:
    # given a source with one document and a set whose items all pass
    source = tmp_path / "docs"
    source.mkdir()
    (source / "p.md").write_text(f"# Compression\n\n{PAGE}\n", encoding="utf-8")
    golden = tmp_path / "set.jsonl"
    write_set(golden, {"q1": "zlib uses DEFLATE.", "q2": "The zlib module compresses data with DEFLATE."})
    passed = runner.invoke(app, ["golden", "check", str(golden), str(source)])
    assert passed.exit_code == 0, passed.output
    assert "; 0 problem(s)" in flat(passed.output)

    # when q2's answer is edited by hand to one its evidence contradicts, and q1's to a bare "Yes."
    lines = golden.read_text(encoding="utf-8").splitlines()
    for n, answer in ((1, "Yes."), (2, "The zlib module does not compress data with DEFLATE.")):
        item = json.loads(lines[n])
        item["reference_answer"] = answer
        lines[n] = json.dumps(item)
    golden.write_text("\n".join(lines) + "\n", encoding="utf-8")
    checked = runner.invoke(app, ["golden", "check", str(golden), str(source)])

    # then each item's failure is printed and the command exits 1
    output = flat(checked.output)
    assert checked.exit_code == 1, checked.output
    assert "q1: answer has no content word: 'Yes.'" in output
    assert "q2: answer's negation differs from its evidence: 'The zlib module does not compress data with DEFLATE'" in (
        output
    )
    assert "; 2 problem(s)" in output and "edited since its header was written" in output


def test_golden_review_keeps_an_item_edited_to_a_wrong_answer_as_a_draft(tmp_path: Path) -> None:
    # given two drafts
    golden = tmp_path / "set.jsonl"
    good = "The zlib module compresses data with DEFLATE."
    write_set(golden, {"q1": good, "q2": good}, status="draft")
    # when the reviewer edits q1's answer to one that negates its evidence, and accepts q2
    result = runner.invoke(
        app, ["golden", "review", str(golden)], input="e\n\nThe zlib module does not use DEFLATE.\n\na\n"
    )
    # then q1 is refused with the reason and stays the draft it was; q2 is reviewed
    assert result.exit_code == 0, result.output
    output = flat(result.output)
    assert "fails its checks, left as a draft: answer's negation differs from its evidence" in output
    assert "1 accepted, 0 edited, 0 rejected, 1 left as drafts" in output
    after = {q.id: q for q in read_golden_set(golden).questions}
    assert after["q1"].status == "draft" and after["q1"].reference_answer == good
    assert after["q2"].status == "reviewed"
