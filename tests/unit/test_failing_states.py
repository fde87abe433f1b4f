"""The readiness failing-state table: how each automated item was shown failing, or why it was not."""

from __future__ import annotations

from tests.failing_states import AUTOMATED, NOT_SHOWN, coverage


def test_each_item_is_shown_by_its_strongest_proof_or_explained() -> None:
    rows = {r["item"]: r for r in coverage({"DB-04": {"state": ["t::a"], "parameters": ["t::b"]},
                                            "INF-04": {"parameters": ["t::c"]}})}
    assert set(rows) == AUTOMATED
    assert (rows["DB-04"]["shown"], rows["DB-04"]["tests"]) == ("real state", ["t::a"])
    assert (rows["INF-04"]["shown"], rows["INF-04"]["tests"]) == ("changed parameters", ["t::c"])
    assert rows["INF-01"]["shown"] == "not at all" and rows["INF-01"]["why_not"] == NOT_SHOWN["INF-01"]
    assert rows["DB-02"]["why_not"] == "UNEXPLAINED"  # neither shown nor explained: the table says so


def test_every_explanation_is_for_an_automated_item() -> None:
    assert set(NOT_SHOWN) <= AUTOMATED, sorted(set(NOT_SHOWN) - AUTOMATED)
    assert all(len(why) > 40 for why in NOT_SHOWN.values())
