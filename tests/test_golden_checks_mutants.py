"""Golden-set item checks at their edges: citation lengths, clause windows of the negation rule, the neighbour rule
on both sides, near-duplicates at the threshold, and the exact text of every failure an item can show.

Expected stems are those of the Snowball English reference vocabulary (snowballstem.org); every other expectation is
worked out by hand in the comment beside it. Drafts are built with `model_construct`, as generation builds them: the
checks must catch what the golden-set schema would refuse, because generation runs them before that schema does.
"""

from __future__ import annotations

import numpy as np
import pytest

from evaluations.golden import Evidence, GoldenQuestion
from evaluations.golden_checks import (
    ItemFailure,
    citable,
    content_words,
    item_failures,
    near_duplicates,
    negation_mismatches,
)

ZLIB = "The zlib module compresses data using the DEFLATE algorithm."


def drafted(
    kind: str, answer: str, evidence: list[tuple[str, str]], question: str = "Which algorithm?"
) -> GoldenQuestion:
    """An item as generation drafts it: not validated by the golden-set schema."""
    return GoldenQuestion.model_construct(
        id="q",
        question=question,
        kind=kind,
        reference_answer=answer,
        judged_docs=None,
        evidence=[Evidence.model_construct(doc_id=d, passage=p, relevance=2) for d, p in evidence],
    )


# tokens


def test_a_contraction_of_a_stopword_is_not_content() -> None:
    # "it'll" is "it" (a stopword) plus a suffix: only "rain" carries content; "o'clock" is "o", one letter
    assert content_words("it'll rain at six o'clock") == {"rain", "six"}
    assert content_words("we're sure they've left") == {"sure", "left"}


# citable: 10 to 600 characters and at least three content words, both bounds included


def test_a_citation_of_exactly_ten_characters_and_three_content_words_is_citable() -> None:
    assert len("cat dog 42") == 10 and content_words("cat dog 42") == {"cat", "dog", "42"}
    assert citable("cat dog 42")
    assert not citable("cat 42")  # two content words
    assert not citable("1 2 3 4")  # four content words (digits count) but 7 characters


def test_a_citation_of_600_characters_is_citable_and_of_601_is_not() -> None:
    words = "alpha beta gamma delta "  # 23 characters, 4 content words
    at_600 = (words * 27)[:599] + "a"  # 27 × 23 = 621 cut to 599, plus one letter: 600 characters
    assert len(at_600) == 600 and citable(at_600)
    assert len(at_600 + "b") == 601 and not citable(at_600 + "b")


# the negation rule's windows: one clause or two neighbouring clauses of the evidence, never three


def test_an_answer_clause_matched_only_by_three_evidence_clauses_is_left_to_the_lexical_floor() -> None:
    # topic of the answer: lion, tiger, bear, wolv, fox, sleep (6). Each evidence clause holds one of them: a pair
    # holds 2 (2·2 = 4 < 6), so no evidence unit speaks about the clause; three clauses would hold 3 (2·3 = 6 ≥ 6)
    answer = "Lions tigers bears wolves foxes never sleep."
    assert negation_mismatches(answer, ["Lions, tigers, bears, wolves."]) == []


def test_two_neighbouring_evidence_clauses_together_decide_the_negation() -> None:
    # topic: lion, tiger, sleep (3). One clause holds 1 (2 < 3); the pair "Lions, tigers" holds 2 (4 ≥ 3) and is
    # not negated, while the answer is: a mismatch
    assert negation_mismatches("Lions and tigers never sleep.", ["Lions, tigers."]) == ["Lions and tigers never sleep"]


def test_evidence_holding_exactly_half_of_the_topic_speaks_about_the_clause() -> None:
    # topic: lion, sleep (2); "Lions roam." holds lion: 2·1 = 2 ≥ 2, not negated; the answer is negated
    assert negation_mismatches("Lions never sleep.", ["Lions roam."]) == ["Lions never sleep"]


def test_evidence_holding_a_third_of_the_topic_does_not_speak_about_the_clause() -> None:
    # topic: lion, chase, zebra (3); "Lions sleep." holds lion only: 2·1 = 2 < 3
    assert negation_mismatches("Lions never chase zebras.", ["Lions sleep."]) == []


def test_a_clause_without_topic_words_is_not_compared() -> None:
    # "not at all" has no topic word; the first clause agrees with the evidence (zlib, compress, data; not negated)
    assert negation_mismatches("Zlib compresses data; not at all.", [ZLIB]) == []


def test_a_clause_no_evidence_speaks_about_does_not_stop_the_next_clause_from_being_checked() -> None:
    # "Penguins fly south" shares nothing with the evidence; "zlib does not compress data" negates it
    mismatched = negation_mismatches("Penguins fly south, zlib does not compress data.", [ZLIB])
    assert mismatched == ["zlib does not compress data"]


STABLE = ["The zlib interfaces are not stable."]  # topic zlib, interfac, stabl; negated


@pytest.mark.parametrize(
    "answer",
    ["Zlib interfaces change, since nothing is stable.", "Nothing is stable, so zlib interfaces change."],
)
def test_a_clause_next_to_a_negated_clause_counts_as_negated_on_either_side(answer: str) -> None:
    # "zlib interfaces change" holds 2 of its 3 topic words in the negated evidence (4 ≥ 3) and is not negated itself;
    # its neighbour "nothing is stable" (left or right) is negated, so the pair agrees with the evidence
    assert negation_mismatches(answer, STABLE) == []


def test_without_a_negated_neighbour_the_same_clause_is_a_mismatch() -> None:
    # "as releases come" shares no topic word with the evidence: it neither speaks about it nor lends its negation
    assert negation_mismatches("Zlib interfaces change, as releases come.", STABLE) == ["Zlib interfaces change"]


# near-duplicates


def test_a_question_exactly_at_the_similarity_threshold_is_a_near_duplicate() -> None:
    # cos = 1 · 0.92 + 0 · 0.39 = 0.92 exactly, the default threshold ("at least this cosine-similar")
    vectors = np.array([[1.0, 0.0], [0.92, float(np.sqrt(1 - 0.92**2))]])
    assert near_duplicates(vectors) == [None, 0]


def test_a_near_duplicate_names_the_kept_question_it_repeats_not_the_first_one() -> None:
    # e0 and e1 are orthogonal (both kept); the third repeats e1, the second kept question
    vectors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert near_duplicates(vectors) == [None, None, 1]


# item_failures: what each failure says


def test_a_failure_without_detail_prints_as_its_reason() -> None:
    assert str(ItemFailure("no evidence cited")) == "no evidence cited"
    assert str(ItemFailure("no evidence cited", "Why?")) == "no evidence cited: Why?"


def test_every_citation_is_checked_after_an_unknown_or_misquoted_one() -> None:
    long_quote = "The zlib module compresses data using the DEFLATE algorithm, and it was written by two authors."
    item = drafted(
        "multi_sentence",
        "The zlib module compresses data using DEFLATE.",
        [("gone.md", ZLIB), ("p.md", long_quote), ("gone2.md", ZLIB)],
    )
    failures = [str(f) for f in item_failures(item, {"p.md": ZLIB})]
    assert failures == [
        "citation not in its document: unknown document 'gone.md'",
        # the passage's first 80 characters, quoted
        "citation not in its document: passage not found in p.md: "
        "'The zlib module compresses data using the DEFLATE algorithm, and it was written '",
        "citation not in its document: unknown document 'gone2.md'",
    ]


def test_a_citation_too_short_or_too_long_says_its_length_and_content_words() -> None:
    too_long = "zlib " * 121  # 605 characters, one content word
    item = drafted("factoid", "The zlib module uses DEFLATE.", [("p.md", "zlib data"), ("p.md", too_long)])
    failures = [str(f) for f in item_failures(item, None)]
    assert failures[:2] == [
        "citation too short or too long: 9 characters, 2 content words: 'zlib data'",
        "citation too short or too long: 605 characters, 1 content words: '" + "zlib " * 16 + "'",  # 80 characters
    ]


def test_an_unanswerable_question_citing_evidence_names_its_first_120_characters() -> None:
    question = "Who wrote " + "the zlib module " * 10  # 10 + 160 characters
    item = drafted("unanswerable", "Nobody knows.", [("p.md", ZLIB)], question=question)
    assert [str(f) for f in item_failures(item, None)] == ["unanswerable question cites evidence: " + question[:120]]


def test_an_answerable_question_without_evidence_names_its_first_120_characters() -> None:
    question = "Which algorithm does " + "the zlib module " * 10
    item = drafted("factoid", "DEFLATE.", [], question=question)
    assert [str(f) for f in item_failures(item, {})] == ["no evidence cited: " + question[:120]]


def test_multi_document_evidence_from_one_document_names_that_document() -> None:
    item = drafted("multi_document", "The zlib module compresses data using the DEFLATE algorithm.", [("p.md", ZLIB)])
    assert [str(f) for f in item_failures(item, None)] == ["multi-document evidence from one document: p.md"]


def test_a_paraphrase_lists_the_first_five_shared_stems_in_order() -> None:
    # shared with the evidence: algorithm, compress, data, deflat, modul, use, zlib (7): the first five, sorted
    item = drafted("paraphrase", "The zlib module compresses data.", [("p.md", ZLIB)], question=ZLIB)
    assert [str(f) for f in item_failures(item, None)] == [
        "paraphrase shares words with its evidence: algorithm, compress, data, deflat, modul"
    ]


def test_an_answer_without_content_words_is_quoted_to_80_characters() -> None:
    answer = "It is what it is, and it was what it was, and it will be what it will be, yes it is so."
    item = drafted("factoid", answer, [("p.md", ZLIB)])
    assert len(answer) > 80
    assert [str(f) for f in item_failures(item, None)] == [f"answer has no content word: {answer[:80]!r}"]


def test_an_answer_with_exactly_half_its_content_words_in_the_evidence_is_supported() -> None:
    # content words of the answer: zlib, brot(li) (2); the evidence holds zlib: 1/2 = 0.5, the floor itself
    assert item_failures(drafted("factoid", "zlib brotli", [("p.md", ZLIB)]), None) == []
    # zlib, brot(li), gzip: 1/3 = 0.33 < 0.5
    failures = item_failures(drafted("factoid", "zlib brotli gzip", [("p.md", ZLIB)]), None)
    assert [str(f) for f in failures] == [
        "answer not supported (lexical floor): 0.33 of its content words in the evidence"
    ]


def test_a_negation_mismatch_lists_each_clause_to_80_characters() -> None:
    long_clause = "The zlib module does not compress data using the DEFLATE algorithm in any of its many modes"
    answer = f"{long_clause}. Zlib never compresses data."
    failures = item_failures(drafted("factoid", answer, [("p.md", ZLIB)]), None)
    assert [str(f) for f in failures] == [
        f"answer's negation differs from its evidence: {long_clause[:80]!r}; 'Zlib never compresses data'"
    ]
