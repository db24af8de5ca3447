"""The pandas reference journey builder on hand-made cases."""

from __future__ import annotations

import pandas as pd

from closedloop_nb.journeys import lead_paths_reference
from closedloop_nb.validation import validate_tables

T0 = pd.Timestamp("2024-01-01T00:00:00Z")


def day(n: float) -> str:
    return (T0 + pd.Timedelta(days=n)).isoformat()


def tables(touches, identities, leads):
    tp = pd.DataFrame(touches, columns=["visitor_id", "timestamp", "channel"]).assign(
        source="x", medium="y")
    ident = pd.DataFrame(identities, columns=["visitor_id", "person_id", "matched_at"]).assign(method="form")
    ld = pd.DataFrame(leads, columns=["person_id", "created_at"])
    return validate_tables({"touchpoints": tp, "identities": ident, "leads": ld}).tables


def as_dict(paths):
    return {r.path: (r.total_conversions, r.total_null) for r in paths.itertuples()}


def test_devices_of_one_person_are_stitched_in_time_order():
    t = tables(
        [("phone", day(1), "Paid Social"), ("laptop", day(2), "Organic Search"),
         ("phone", day(3), "Email"), ("laptop", day(4), "Direct")],
        [("laptop", "P1", day(4)), ("phone", "P1", day(10))],   # phone identified later, by login
        [("P1", day(4))],
    )
    assert as_dict(lead_paths_reference(t)) == {"Paid Social > Organic Search > Email > Direct": (1, 0)}


def test_lookback_boundary_is_inclusive_and_later_touches_are_left_out():
    t = tables(
        [("v", day(0), "A"), ("v", day(0.5), "B"), ("v", day(90.5), "C"), ("v", day(91), "D")],
        [("v", "P1", day(90.5))],
        [("P1", day(90.5))],
    )
    # A is 90.5 days before: outside; B exactly 90 days before: inside; D after the conversion
    assert as_dict(lead_paths_reference(t)) == {"B > C": (1, 0)}


def test_unmatched_visitors_are_non_converting_journeys():
    t = tables(
        [("v1", day(1), "A"), ("v2", day(1), "A"), ("v2", day(2), "B"), ("v3", day(1), "A")],
        [("v1", "P1", day(1))],
        [("P1", day(1))],
    )
    assert as_dict(lead_paths_reference(t)) == {"A": (1, 1), "A > B": (0, 1)}


def test_a_visitor_matched_to_two_people_counts_for_the_earliest_match():
    t = tables(
        [("shared", day(1), "A"), ("other", day(2), "B")],
        [("shared", "P2", day(5)), ("shared", "P1", day(1)), ("other", "P2", day(2))],
        [("P1", day(1)), ("P2", day(2))],
    )
    assert as_dict(lead_paths_reference(t)) == {"A": (1, 0), "B": (1, 0)}
