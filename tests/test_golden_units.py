"""Unit tests of the golden-set modules: checks, sampling, the file format, generation checks, document-level gates."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evaluations.gate import Policy, load_policy
from evaluations.golden import (
    BadGoldenSetError,
    Evidence,
    GoldenQuestion,
    GoldenSet,
    coverage_error,
    items_hash,
    read_golden_set,
    write_golden_set,
)
from evaluations.golden_checks import content_words, lexical_support, near_duplicates, shared_words, stem, verbatim_in
from evaluations.golden_generate import UNANSWERABLE_ANSWER, Candidate, Dropped, draft_item, parse_json_object
from evaluations.golden_sampling import MIN_CHUNK_CHARS, SourceChunk, StratifiedSampler, plan_kinds

from .conftest import REPO

LONG = "Filler words about interpreters and their modules, repeated to make an eligible chunk. " * 3


def chunk(doc: str, i: int, section: str = "", text: str = LONG) -> SourceChunk:
    return SourceChunk(chunk_id=f"{doc}-{i}", doc_id=doc, section=section, text=text, position=i)


def drain(sampler: StratifiedSampler) -> list[SourceChunk]:
    out = []
    while (c := sampler.next_chunk()) is not None:
        out.append(c)
    return out


# golden_checks


def test_stem_and_content_words() -> None:
    # Expected stems from the Snowball English (Porter 2) reference vocabulary, snowballstem.org
    assert stem("compressing") == stem("compressed") == "compress"
    assert stem("libraries") == "librari" and stem("quickly") == "quick"
    assert stem("bus") == "bus"
    assert content_words("The quick brown_fox ran 7 times, it is an ox") == {
        "quick",
        "brown",
        "fox",
        "ran",
        "7",
        "time",
    }


def test_shared_words_and_lexical_support() -> None:
    assert shared_words("Is zlib compressing quickly?", ["zlib compressed it", "slowly"]) == {"zlib", "compress"}
    assert shared_words("What does it do?", ["It does nothing at all."]) == set()  # a shared negation is no topic
    assert lexical_support("zlib deflate gzip brotli", ["zlib and deflate"]) == 0.5
    assert lexical_support("it is what it is", ["anything"]) == 0.0  # no content word: nothing to support
    assert lexical_support("gzip", []) == 0.0


def test_verbatim_in_normalizes_whitespace_only() -> None:
    assert verbatim_in("the  quick\nbrown", ["x", "see the quick brown fox"])
    assert not verbatim_in("the quick red", ["see the quick brown fox"])
    assert not verbatim_in("  \n ", ["anything"])
    assert not verbatim_in("the quick brown", [])


def test_near_duplicates_is_greedy_over_kept_questions() -> None:
    def unit(deg: float) -> list[float]:
        return [float(np.cos(np.radians(deg))), float(np.sin(np.radians(deg))), 0.0]

    vectors = np.array([unit(0), unit(20), unit(40), [0.0, 0.0, 1.0], unit(0), unit(90)])
    # 20° (cos 0.94) repeats 0; 40° is 0.94 from the dropped 20° but only 0.77 from 0: kept.
    assert near_duplicates(vectors) == [None, 0, None, None, 0, None]
    assert near_duplicates(vectors, threshold=0.99) == [None, None, None, None, 0, None]


# golden_sampling


def test_plan_kinds_sums_to_n_with_largest_remainders() -> None:
    mix = {"factoid": 0.5, "paraphrase": 0.3, "unanswerable": 0.2}
    assert plan_kinds(4, mix, documents=3) == {"factoid": 2, "paraphrase": 1, "unanswerable": 1}
    for n in (1, 7, 10, 33):
        for docs in (1, 2, 5):
            plan = plan_kinds(n, {"factoid": 0.35, "paraphrase": 0.2, "multi_document": 0.1}, docs)
            assert sum(plan.values()) == n
            assert "multi_document" not in plan or docs > 1
    assert plan_kinds(7, {"factoid": 0.35, "paraphrase": 0.2, "multi_document": 0.1}, 2)["multi_document"] == 1
    plan = plan_kinds(10, {"factoid": 0.35, "multi_sentence": 0.2, "paraphrase": 0.2, "unanswerable": 0.15,
                           "multi_document": 0.1}, documents=1)  # fmt: skip
    assert plan == {"factoid": 4, "multi_sentence": 2, "paraphrase": 2, "unanswerable": 2}
    assert plan_kinds(0, mix, 3) == {} and plan_kinds(-2, mix, 3) == {}
    assert plan_kinds(5, {"multi_document": 1.0}, documents=1) == {}


def test_sampler_documents_take_turns_and_skip_short_chunks() -> None:
    chunks = [chunk("a", i) for i in range(10)] + [chunk("b", i) for i in range(2)] + [chunk("c", 0)]
    short = [chunk("b", 9, text="tiny " + " " * 400), chunk("c", 5, text="x" * (MIN_CHUNK_CHARS - 1))]
    sampler = StratifiedSampler(chunks + short, seed=3)
    assert sampler.documents == 3 and len(sampler.pool) == 13
    remaining = Counter(c.doc_id for c in chunks)
    got: Counter[str] = Counter()
    order = []
    while (c := sampler.next_chunk()) is not None:
        order.append(c)
        got[c.doc_id] += 1
        remaining[c.doc_id] -= 1
        for doc in got:
            for other in remaining:
                if remaining[other] > 0:
                    assert got[doc] <= got[other] + 1, (doc, other, got)
    assert len({c.doc_id for c in order[:3]}) == 3
    assert sorted(c.chunk_id for c in order) == sorted(c.chunk_id for c in chunks)
    assert sampler.next_chunk() is None


def test_sampler_sections_take_turns_within_a_document() -> None:
    chunks = [chunk("a", i, section="intro") for i in range(4)] + [chunk("a", 10 + i, "usage") for i in range(2)]
    for seed in range(5):
        order = [c.section for c in drain(StratifiedSampler(chunks, seed))]
        assert Counter(order[:4]) == {"intro": 2, "usage": 2} and order[4:] == ["intro", "intro"]


def test_sampler_is_seeded() -> None:
    chunks = [chunk(d, i, section=f"s{i % 3}") for d in "abcd" for i in range(6)]
    ids = [[c.chunk_id for c in drain(StratifiedSampler(chunks, seed))] for seed in range(6)]
    assert ids[0] == [c.chunk_id for c in drain(StratifiedSampler(chunks, 0))]
    assert any(other != ids[0] for other in ids[1:])
    assert all(len(set(order)) == len(chunks) for order in ids)


def test_partner_is_the_most_similar_unused_chunk_of_another_document() -> None:
    pool = [chunk("a", 0), chunk("a", 1), chunk("b", 0), chunk("b", 1), chunk("c", 0)]
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.9, np.sqrt(0.19)], [0.0, 1.0]])
    sampler = StratifiedSampler(pool, seed=0)
    assert sampler.partner(pool[0], pool, vectors) == pool[3]  # a-1 is closer but of the same document
    assert "b-1" in sampler.used
    assert sampler.partner(pool[0], pool, vectors) == pool[2]
    assert sampler.partner(pool[0], pool, vectors) == pool[4]
    assert sampler.partner(pool[0], pool, vectors) is None
    assert sampler.partner(chunk("z", 0), pool, vectors) is None
    assert sorted(c.chunk_id for c in drain(sampler)) == ["a-0", "a-1"]  # partners are never handed out again


# golden (file format)


def q(qid: str, kind: str = "factoid", docs: tuple[str, ...] = ("d1",), status: str | None = None) -> GoldenQuestion:
    evidence = [Evidence(doc_id=d, passage=f"A passage quoted from {d}.") for d in docs]
    answer = UNANSWERABLE_ANSWER if kind == "unanswerable" else "An answer."
    return GoldenQuestion.model_validate(
        {"id": qid, "question": f"Question {qid}?", "kind": kind, "reference_answer": answer,
         "evidence": [e.model_dump() for e in evidence] if kind != "unanswerable" else [], "status": status}
    )  # fmt: skip


def test_write_read_round_trip_and_hand_edit(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    questions = [q("q1", status="draft"), q("q2", "multi_document", ("d2", "d1")), q("q3", "unanswerable")]
    digest = write_golden_set(path, questions, {"version": 3, "corpus": {"table": "t"}})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert set(json.loads(lines[0])) == {"golden_set"} and len(lines) == 4
    loaded = read_golden_set(path)
    assert loaded.header["sha256"] == loaded.sha256 == digest == items_hash(lines[1:])
    assert loaded.questions == questions and loaded.version == 3 and not loaded.edited
    assert loaded.drafts == ["q1"] and loaded.cited_docs == ["d1", "d2"] and loaded.layout == "jsonl"
    lines[2] = lines[2].replace("Question q2?", "Question q2, edited?")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    edited = read_golden_set(path)
    assert edited.edited and edited.sha256 != digest and edited.header["sha256"] == digest


def test_header_must_be_on_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    header = json.dumps({"golden_set": {"version": 1}})
    path.write_text(q("q1").model_dump_json(exclude_none=True) + "\n" + header + "\n", encoding="utf-8")
    with pytest.raises(BadGoldenSetError, match=r"set\.jsonl:2: a 'golden_set' header must be an object"):
        read_golden_set(path)
    for first in (header, json.dumps({"golden_set": {}})):  # an empty header is a header too
        path.write_text("\n".join([first, header, q("q1").model_dump_json(exclude_none=True)]), encoding="utf-8")
        with pytest.raises(BadGoldenSetError, match=r":2: "):
            read_golden_set(path)


def test_item_validation_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    item = {
        "id": "q1",
        "question": "What is it?",
        "kind": "factoid",
        "reference_answer": "It.",
        "judged_docs": {"d": 1},
    }
    path.write_text(json.dumps(item) + "\n", encoding="utf-8")
    with pytest.raises(BadGoldenSetError, match=r"set\.jsonl:1: field 'judged_docs'"):
        read_golden_set(path)
    one_doc = q("q2").model_dump() | {"kind": "multi_document"}
    path.write_text(q("q1").model_dump_json(exclude_none=True) + "\n\n" + json.dumps(one_doc) + "\n", encoding="utf-8")
    with pytest.raises(BadGoldenSetError, match=r":3: field 'evidence': .*two documents"):
        read_golden_set(path)


@pytest.mark.parametrize("qrels_at", ["qrels/test.tsv", "qrels.tsv"])
def test_beir_folder_loads_document_judgements(tmp_path: Path, qrels_at: str) -> None:
    queries = {"q1": "python", "q2": "how do I install a package", "q3": "no relevant doc", "q9": "unjudged"}
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()), encoding="utf-8"
    )
    (tmp_path / qrels_at).parent.mkdir(exist_ok=True)
    rows = ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q1\td2\t0", "q2\td3\t1", "q3\td4\t0", "qx\td5\t1"]
    (tmp_path / qrels_at).write_text("\n".join(rows) + "\n", encoding="utf-8")
    golden = read_golden_set(tmp_path)
    assert golden.layout == "beir" and golden.documents_only
    assert [(x.id, x.question, x.judged_docs) for x in golden.questions] == [
        ("q1", "python", {"d1": 2}),
        ("q2", "how do I install a package", {"d3": 1}),
    ]
    assert golden.cited_docs == ["d1", "d3"] and golden.questions[0].relevant_docs == {"d1": 2}
    assert len(golden.sha256) == 64


def test_beir_folder_without_qrels_lists_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "python"}\n', encoding="utf-8")
    (tmp_path / "corpus.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(BadGoldenSetError, match=r"found \['corpus\.jsonl', 'queries\.jsonl'\]"):
        read_golden_set(tmp_path)


def test_coverage_error() -> None:
    golden = GoldenSet("g.jsonl", [q(f"q{i}", docs=(f"d{i}",)) for i in range(1, 9)])
    assert coverage_error(golden, {"d1", "d2", "d3", "d4"}, "t", 4, 0.5) is None
    assert coverage_error(golden, {f"d{i}" for i in range(1, 9)} | {"zz"}, "t", 4, 1.0) is None
    message = coverage_error(golden, {"d1", "d2", "other"}, "t", 4, 0.5)
    assert message is not None
    assert "cites 8 documents; 2 are in table 't' version 4" in message
    assert "first missing: d3, d4, d5, d6, d7 and 1 more" in message
    only_unanswerable = GoldenSet("u.jsonl", [q("u1", "unanswerable")])
    assert coverage_error(only_unanswerable, set(), "t", 4, 0.9) is None


# golden_generate

TEXT_A = "The zlib module compresses data using the DEFLATE algorithm. Compression level 9 gives the smallest output."
TEXT_B = "The gzip module reads and writes gzip files. It wraps zlib with a file header and a checksum trailer."
A, B = chunk("a", 0, text=TEXT_A), chunk("b", 0, text=TEXT_B)
DOC_TEXTS = {"a": ["Some other chunk of a.", TEXT_A], "b": [TEXT_B]}
FACT = "The zlib module compresses data using the DEFLATE algorithm."


class Scripted:
    """A chat stand-in: returns its replies in order (or raises one that is an exception), counting calls."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def item(question: str, answer: str, *evidence: tuple[int, str]) -> str:
    cited = [{"passage": n, "text": t} for n, t in evidence]
    return "Sure!\n```json\n" + json.dumps({"question": question, "answer": answer, "evidence": cited}) + "\n```"


SUPPORTED = '{"supported": true, "reason": "stated"}'


def test_parse_json_object() -> None:
    assert parse_json_object('Here:\n```json\n{"a": {"b": 1}}\n```\nDone.') == {"a": {"b": 1}}
    with pytest.raises(ValueError, match="no JSON object"):
        parse_json_object("I cannot do that.")
    for listed in ('[{"a": 1}, {"b": 2}]', '[{"a": 1}]', '[1, {"a": 1}, 2]'):  # a list is not the object asked for
        with pytest.raises(ValueError, match="not a JSON object"):
            parse_json_object(listed)
    with pytest.raises(ValueError, match="no JSON object"):
        parse_json_object('["a", 1]')
    with pytest.raises(ValueError):
        parse_json_object("{not json}")


def test_draft_item_keeps_a_verified_item() -> None:
    chat = Scripted(item("Which algorithm does zlib use?", "The zlib module uses the DEFLATE algorithm.", (1, FACT)),
                     SUPPORTED)  # fmt: skip
    got = draft_item("factoid", [A], DOC_TEXTS, chat)
    assert isinstance(got, Candidate) and got.kind == "factoid" and got.chunks == [A]
    assert got.evidence == [Evidence(doc_id="a", passage=FACT)]
    assert len(chat.prompts) == 2 and FACT in chat.prompts[1] and "supported" in chat.prompts[1]


@pytest.mark.parametrize(
    ("kind", "replies", "reason", "calls"),
    [
        ("factoid", [item("Which algorithm?", "DEFLATE.", (1, "zlib uses the LZMA algorithm always."))],
         "citation not in its document", 1),
        ("factoid", [item("Which algorithm?", "DEFLATE.", (1, TEXT_B[:40]))], "citation not in its document", 1),
        ("factoid", [item("Which algorithm?", "DEFLATE.", (2, FACT))], "citation not in its document", 1),
        ("paraphrase", [item("Which method does the zlib library apply?", "DEFLATE algorithm.", (1, FACT))],
         "paraphrase shares words with its evidence", 1),
        ("factoid", [item("Which algorithm?", "Gzip archives rely on Huffman trees and checksums.", (1, FACT))],
         "answer not supported (lexical floor)", 1),
        ("factoid", [item("Which algorithm?", "The DEFLATE algorithm.", (1, FACT)), '{"supported": false}'],
         "answer not supported (LLM check)", 2),
        ("factoid", ["I would rather not."], "malformed reply", 1),
        ("factoid", ['{"question": "Which algorithm?"}'], "malformed reply", 1),
        ("factoid", [TimeoutError("endpoint down")], "LLM call failed", 1),
        ("multi_document", [item("How do zlib and gzip relate?", "zlib compresses using DEFLATE.", (1, FACT),
                                 (1, "Compression level 9 gives the smallest output."))],
         "multi-document evidence from one document", 1),
    ],
)  # fmt: skip
def test_draft_item_drops_with_a_reason(kind: str, replies: list[str | Exception], reason: str, calls: int) -> None:
    chat = Scripted(*replies)
    chunks = [A, B] if kind == "multi_document" else [A]
    with pytest.raises(Dropped) as caught:
        draft_item(kind, chunks, DOC_TEXTS, chat)
    assert caught.value.reason == reason
    assert len(chat.prompts) == calls


def test_draft_item_multi_document_and_unanswerable() -> None:
    chat = Scripted(item("How do zlib and gzip files relate?", "The gzip module wraps zlib, which uses DEFLATE.",
                         (1, FACT), (2, TEXT_B)), SUPPORTED)  # fmt: skip
    got = draft_item("multi_document", [A, B], DOC_TEXTS, chat)
    assert [ev.doc_id for ev in got.evidence] == ["a", "b"] and len(chat.prompts) == 2
    chat = Scripted(item("Does zlib support Zstandard dictionaries?", "No idea."))
    got = draft_item("unanswerable", [A], DOC_TEXTS, chat)
    assert got.answer == UNANSWERABLE_ANSWER and got.evidence == [] and len(chat.prompts) == 1
    with pytest.raises(Dropped, match="unanswerable question cites evidence"):
        draft_item("unanswerable", [A], DOC_TEXTS, Scripted(item("Does zlib do it?", "No.", (1, FACT))))


# gate


def test_document_level_policy_keeps_only_doc_metrics() -> None:
    policy, _ = load_policy(REPO / "evaluations" / "policies" / "default.yaml")
    restricted, dropped = policy.document_level(10)
    assert restricted.primary_metric == "doc_ndcg@10"
    assert restricted.minimums == {}  # the shipped policy sets no floor: golden sets do, in their header
    assert restricted.required == ["doc_ndcg@10"] and restricted.gated == ["doc_ndcg@10"]
    assert dropped == ["abstention", "answer_rate", "chunk_ndcg@10", "chunk_recall@10", "id_based_context_recall",
                       "rouge_score", "semantic_similarity"]  # fmt: skip
    assert policy.primary_metric == "chunk_ndcg@10"  # the original is untouched
    judged = Policy(primary_metric="faithfulness", required=["faithfulness", "doc_mrr@5"], gated=["doc_recall@5"])
    restricted, dropped = judged.document_level(5)
    assert restricted.primary_metric == "doc_ndcg@5" and dropped == ["faithfulness"]
    assert restricted.required == ["doc_mrr@5", "doc_ndcg@5"] and restricted.gated == ["doc_ndcg@5", "doc_recall@5"]
    assert Policy(primary_metric="chunk_recall@5").document_level(10)[0].primary_metric == "doc_recall@5"
    floored = Policy(primary_metric="chunk_ndcg@10", minimums={"doc_hit_rate@10": 0.6, "chunk_recall@10": 0.4})
    assert floored.document_level(10)[0].minimums == {"doc_hit_rate@10": 0.6}
