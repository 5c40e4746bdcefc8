"""The stage-by-stage CPU section survives `make bench` rewriting docs/benchmarks.md; repeated
runs are summarised by their medians."""

from __future__ import annotations

from benchmarks.stages import BEGIN, END, kept_section, median_by_key, with_section

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


def test_repeated_runs_report_each_figures_median_and_a_missing_stage_as_zero() -> None:
    runs = [
        {"process": 3.0, "download": 0.5, "requests/s": 100.0},
        {"process": 9.0, "download": 0.7, "requests/s": 40.0},
        {"process": 4.0, "requests/s": 90.0},
    ]
    assert median_by_key(runs) == {"process": 4.0, "download": 0.5, "requests/s": 90.0}
