"""The stage-by-stage CPU section survives `make bench` rewriting docs/benchmarks.md."""

from __future__ import annotations

from benchmarks.stages import BEGIN, END, kept_section, with_section

SECTION = f"{BEGIN}\n## Gateway CPU by stage\n\n| a | b |\n{END}"


def test_the_section_goes_before_the_profiles_and_replaces_an_older_one() -> None:
    fresh = "# Benchmarks\n\n## B5\n\ntext\n\n## Profiles\n\nflame\n"
    once = with_section(fresh, SECTION)
    assert once.index(BEGIN) < once.index("## Profiles") and once.endswith("flame\n")
    newer = SECTION.replace("| a | b |", "| c | d |")
    twice = with_section(once, newer)
    assert twice.count(BEGIN) == 1 and "| c | d |" in twice and "| a | b |" not in twice


def test_a_rewritten_document_keeps_the_section_of_the_previous_one() -> None:
    previous = with_section("# Benchmarks\n\n## Profiles\n", SECTION)
    rewritten = "# Benchmarks\n\nnew figures\n"
    assert kept_section(previous) == SECTION
    assert kept_section(with_section(rewritten, kept_section(previous))) == SECTION
    assert kept_section(rewritten) == ""
