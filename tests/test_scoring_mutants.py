"""Scoring's plain functions at their edges: the mode chosen on ties and unscored modes, means over the questions
scored, partial coverage of a cut passage at its threshold, and chunk overlaps merged back (plain functions; every
expected value is worked out by hand in the comment beside it)."""

from __future__ import annotations

import math
import random

from evaluations.golden import merge_overlapping
from evaluations.scoring import QuestionResult, best_mode, covers, mean_scores

M = "chunk_ndcg@10"


def test_the_best_mode_is_the_highest_and_the_earlier_one_on_a_tie() -> None:
    sweep = {"vector": {M: 0.5}, "fulltext": {M: 0.75}, "hybrid": {M: 0.75}}
    assert best_mode(sweep, ["vector", "fulltext", "hybrid"], M) == "fulltext"
    assert best_mode(sweep, ["hybrid", "fulltext", "vector"], M) == "hybrid"


def test_a_mode_that_scored_nothing_ranks_below_a_mode_that_scored_zero() -> None:
    sweep = {"vector": {M: None}, "fulltext": {M: 0.0}}
    assert best_mode(sweep, ["vector", "fulltext"], M) == "fulltext"


def result(qid: str, value: float | None) -> QuestionResult:
    return QuestionResult(qid, "factoid", "?", [], None, {M: value})


def test_means_skip_unscored_and_nan_questions_and_are_rounded_to_six_decimals() -> None:
    # scored: 0, 1, 1 → 2/3 = 0.666666…, 0.666667 at six decimals; None and NaN are left out
    results = [result("a", 0.0), result("b", 1.0), result("c", 1.0), result("d", None), result("e", math.nan)]
    assert mean_scores(results, [M, "rouge_score"]) == {M: 0.666667, "rouge_score": None}
    assert mean_scores([result("a", None)], [M]) == {M: None}


PASSAGE = "The cache is flushed when the interpreter exits normally, and the lock is released afterwards."  # 95


def test_a_chunk_holding_the_whole_passage_covers_it() -> None:
    assert covers(f"Intro. {PASSAGE} Outro.", PASSAGE)


def test_a_cut_passage_is_covered_from_thirty_characters_or_half_of_it() -> None:
    wanted = "The cache is flushed when the interpreter exits, and then the lock goes."  # 72 characters
    assert len(wanted) == 72  # half: 72 // 2 = 36
    assert covers(wanted[:36] + " something else entirely", wanted)  # the first 36 characters, at the chunk's start
    assert not covers(wanted[:35] + " something else entirely", wanted)
    short = "The cache is flushed at exit, always."  # 37 characters: the 30-character minimum applies (37 // 2 = 18)
    assert covers(short[:30] + "|zzz", short) and not covers(short[:29] + "|zzz", short)


def test_an_odd_length_passage_needs_the_floor_of_half() -> None:
    wanted = "The quick brown fox jumps over the lazy dog, then naps in the warm sun!"  # 71: 71 // 2 = 35
    assert len(wanted) == 71
    assert covers("zz " + wanted[-35:], wanted)  # its last 35 characters
    assert not covers("zz " + wanted[-34:], wanted)


def test_a_long_passage_is_matched_character_by_character_without_junk_heuristics() -> None:
    # difflib's autojunk treats characters frequent in a 200+ character text as junk and breaks matches at them;
    # a chunk holding the first 160 of a 300-character passage holds more than half of it
    random.seed(1)
    wanted = " ".join("".join(random.choice("abcdefghij") for _ in range(5)) for _ in range(50))  # 299 characters
    assert covers(wanted[:160] + " other", wanted)
    # more than half wanted: 100 of 299 characters is not enough (the 30-character minimum is not the bar here)
    assert not covers(wanted[:100] + " other", wanted)


def test_overlapping_chunks_merge_at_the_longest_overlap() -> None:
    # "abab" ends the first chunk and starts the second: merged once, not "ab" of it
    assert merge_overlapping(["xx abab", "abab yy"], probe=2) == "xx abab yy"


def test_an_overlap_is_found_past_earlier_false_starts() -> None:
    # the probe "ab" occurs at 0 and 5 before the real overlap "ab y ab" at 5; the one at 10 would be shorter
    assert merge_overlapping(["ab x ab y ab", "ab y ab z"], probe=2) == "ab x ab y ab z"
    # overlapping occurrences of the probe "aa" (at 4 and 5): the overlap is "aa" at 5
    assert merge_overlapping(["aab aaa", "aa c"], probe=2) == "aab aaa c"


def test_an_overlap_of_exactly_the_probe_length_is_merged() -> None:
    overlap = "twenty-four characters!!"
    assert len(overlap) == 24
    assert merge_overlapping([f"Start. {overlap}", f"{overlap} End."]) == f"Start. {overlap} End."


def test_no_chunks_merge_into_an_empty_text() -> None:
    assert merge_overlapping([]) == ""


def test_a_long_passage_cut_in_half_by_a_chunk_boundary_is_still_held() -> None:
    # a 240-character passage; the chunk holds its first 130 characters (more than half) and unrelated text.
    # Spaces and common letters occur in well over 1 % of both strings: with difflib's autojunk heuristic they would
    # be junk and the longest match would stop at the first space, far short of half the passage.
    passage = (
        "The garbage collector tracks every container object that can take part in a reference cycle, and it runs "
        "whenever the number of allocations minus deallocations exceeds the threshold of the youngest generation "
        "of the three."
    )
    assert len(passage) >= 200
    chunk = "Unrelated introduction about memory management in general terms. " + passage[:130]

    assert covers(chunk, passage) is True
