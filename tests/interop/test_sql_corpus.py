"""sqlmap's payload catalogue against mcpgw's `sql_injection` detector and `read_only_sql` constraint, with
hand-written benign values and queries, and libinjection on the same strings as a baseline (see sql_corpus.py).

All calls go through one `mcpgw policy evaluate` process (about 54,000 lines; ~10 s with the debug build). The
measured numbers are printed by `python tests/interop/sql_corpus.py --report`; `--misses` lists what mcpgw lets
through and which benign inputs it refuses.

The thresholds below are MEASURED values (2026-11-25, the detector on the SQL tokenizer with dialects, splice readings
and fragment rules; sqlmap 1.10.10), lowered by a small margin, so that a regression fails while an improvement passes.
When the detector improves, re-measure and raise them; never lower them to make a run pass. The detector's fragment
rules were written while looking at this corpus: its rate here is a training-set number, not a promise about
payloads nobody has tried (see docs/policy.md).
"""
import pytest

import sql_corpus as corpus

# Percent of each technique's values that mcpgw's sql_injection detector refuses, as measured.
MEASURED_DETECTION = {
    "boolean_blind": 100.0,
    "error_based": 100.0,
    "inline_query": 87.5,
    "stacked_queries": 100.0,
    "time_blind": 100.0,
    "union_query": 100.0,
}
MEASURED_DETECTION_OVERALL = 99.9
# Percent of `SELECT * FROM t WHERE id=<value>` that read_only_sql refuses, as measured.
MEASURED_RO_REJECTION = {
    "boolean_blind": 46.1,
    "error_based": 35.5,
    "inline_query": 0.0,
    "stacked_queries": 75.8,
    "time_blind": 57.2,
    "union_query": 68.4,
}
MEASURED_RO_REJECTION_OVERALL = 51.5
MARGIN_POINTS = 0.5  # percentage points below the measured rates that still pass
MEASURED_BENIGN_FALSE_POSITIVES = 6  # of the benign values, refused by the detector
MEASURED_BENIGN_QUERIES_ACCEPTED = 129  # of the benign read-only queries, accepted by read_only_sql


@pytest.fixture(scope="module")
def result():
    return corpus.evaluate()


def rate(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def test_corpus_is_complete(result):
    records = result["records"]
    assert len(records) > 20_000
    assert {r["technique"] for r in records} == set(corpus.TECHNIQUES)
    leftovers = [r["value"] for r in records if corpus.PLACEHOLDER.search(r["value"])]
    assert leftovers == [], leftovers[:5]
    assert len({(r["technique"], r["value"]) for r in records}) == len(records)
    assert len(result["benign_values"]) >= 220
    assert len(result["benign_queries"]) >= 120
    assert all("\t" not in v for v in result["benign_values"] + result["benign_queries"])
    assert corpus.build_corpus() == records, "the corpus must be deterministic"


def test_every_stacked_payload_is_detected(result):
    stacked = [i for i, r in enumerate(result["records"]) if corpus.is_stacked(r)]
    assert len(stacked) > 1000
    missed = [result["records"][i]["value"] for i in stacked if not result["mcpgw_detected"][i]]
    if missed:
        pytest.fail(f"{len(missed)} of {len(stacked)} stacked payloads not detected, e.g. {missed[:10]}", pytrace=False)


def below_measured(result, key: str, measured: dict, measured_overall: float) -> dict:
    """Techniques (and "all") whose rate of `key` (a count in corpus.summary) fell below the measured rate."""
    s = corpus.summary(result)
    below = {}
    for technique, expected in measured.items():
        row = s["per_technique"][technique]
        got = rate(row[key], row["payloads"])
        if got < expected - MARGIN_POINTS:
            below[technique] = (round(got, 1), expected)
    overall = rate(s[key], s["total"])
    if overall < measured_overall - MARGIN_POINTS:
        below["all"] = (round(overall, 1), measured_overall)
    return below


def test_detection_rates_do_not_regress(result):
    below = below_measured(result, "mcpgw", MEASURED_DETECTION, MEASURED_DETECTION_OVERALL)
    assert below == {}, f"detection fell below the measured rates (got, measured): {below}"


def test_benign_values_are_not_refused_more_than_measured(result):
    flagged = [(v, why) for v, f, why in zip(result["benign_values"], result["mcpgw_benign_flagged"],
                                              result["mcpgw_benign_problem"]) if f]
    assert len(flagged) <= MEASURED_BENIGN_FALSE_POSITIVES, flagged


def test_read_only_sql_accepts_the_benign_queries(result):
    rejected = [(q, why) for q, ok, why in zip(result["benign_queries"], result["ro_benign_accepted"],
                                               result["ro_benign_problem"]) if not ok]
    accepted = len(result["benign_queries"]) - len(rejected)
    assert accepted >= MEASURED_BENIGN_QUERIES_ACCEPTED, rejected


def test_read_only_sql_rejection_of_wrapped_payloads_does_not_regress(result):
    below = below_measured(result, "ro_rejected", MEASURED_RO_REJECTION, MEASURED_RO_REJECTION_OVERALL)
    assert below == {}, f"read_only_sql rejection fell below the measured rates (got, measured): {below}"


def test_report_renders_with_the_libinjection_baseline_or_a_note(result):
    text = corpus.report(result)
    assert "| **all** |" in text
    if result["libinjection_detected"] is None:
        assert "libinjection not measured" in text
        pytest.skip(f"libinjection baseline not measured: {result['libinjection_error']}")
    assert len(result["libinjection_detected"]) == len(result["records"])
