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


# --- the engines (DuckDB by default, Spark in local mode) -------------------------------------------

import pytest  # noqa: E402

from closedloop_nb.journeys import build_journeys  # noqa: E402


def paths_of(journeys):
    return as_dict(journeys.paths)


def test_duckdb_engine_on_the_hand_made_cases():
    t = tables(
        [("phone", day(1), "Paid Social"), ("laptop", day(2), "Organic Search"),
         ("phone", day(3), "Email"), ("laptop", day(4), "Direct"), ("anon", day(2), "Display")],
        [("laptop", "P1", day(4)), ("phone", "P1", day(10))],
        [("P1", day(4))],
    )
    j = build_journeys(t)
    assert paths_of(j) == {"Paid Social > Organic Search > Email > Direct": (1, 0), "Display": (0, 1)}


def test_lookback_boundary_is_inclusive_in_sql_too():
    t = tables([("v", day(0), "A"), ("v", day(0.5), "B"), ("v", day(90.5), "C"), ("v", day(91), "D")],
               [("v", "P1", day(90.5))], [("P1", day(90.5))])
    # D comes after P1's only conversion: it is in no journey, and the reconciliation says so
    j = build_journeys(t, lookback_days=90)
    assert paths_of(j) == {"B > C": (1, 0)}
    recon = j.reconciliation.set_index(["item", "bucket"])["n"]
    assert recon[("touches", "in")] == 4 and recon[("touches", "in converting journeys")] == 2


def test_collapse_cap_and_direct_options():
    t = tables([("v", day(i), ch) for i, ch in enumerate(["A", "A", "Direct", "B", "C", "C", "D"])],
               [("v", "P1", day(6))], [("P1", day(6))])
    assert paths_of(build_journeys(t, collapse_repeats=True)) == {"A > Direct > B > C > D": (1, 0)}
    assert paths_of(build_journeys(t, drop_direct=True)) == {"A > A > B > C > C > D": (1, 0)}
    # cap 3 keeps the first touch and the last two
    assert paths_of(build_journeys(t, max_touches=3)) == {"A > C > D": (1, 0)}


def test_next_journey_starts_after_the_previous_conversion():
    tp = pd.DataFrame([("v", day(1), "A"), ("v", day(3), "B"), ("v", day(5), "C")],
                      columns=["visitor_id", "timestamp", "channel"]).assign(source="x", medium="y")
    ident = pd.DataFrame([("v", "P1", day(1), "form")],
                         columns=["visitor_id", "person_id", "matched_at", "method"])
    orders = pd.DataFrame({"order_id": ["o1", "o2"], "customer_id": ["P1", "P1"],
                           "timestamp": [day(3), day(5)], "amount": [10.0, 30.0]})
    leads = pd.DataFrame({"person_id": ["P1"], "created_at": [day(1)]})
    t = validate_tables({"touchpoints": tp, "identities": ident, "orders": orders, "leads": leads}).tables
    j = build_journeys(t, conversion="order")
    assert paths_of(j) == {"A > B": (1, 0), "C": (1, 0)}
    assert j.paths["total_conversion_value"].sum() == 40.0
    assert paths_of(build_journeys(t, conversion="order", restart_after_conversion=False)) == {
        "A > B": (1, 0), "A > B > C": (1, 0)}


def test_conversions_without_touches_are_an_explicit_unattributed_bucket():
    t = tables([("v", day(1), "A")], [("v", "P1", day(1))],
               [("P1", day(1)), ("P2", day(2))])  # P2: an offline lead, no visitor at all
    recon = build_journeys(t).reconciliation.set_index(["item", "bucket"])["n"]
    assert recon[("conversions", "in")] == 2
    assert recon[("conversions", "with a journey")] == 1
    assert recon[("conversions", "unattributed: no touches at all (offline or unmatched)")] == 1


@pytest.fixture(scope="module")
def synthetic_tables():
    from closedloop_nb.synth import generate

    return validate_tables(generate(4_000, seed=8).frames()).tables


def test_duckdb_equals_the_pandas_reference(synthetic_tables):
    pd.testing.assert_frame_equal(build_journeys(synthetic_tables).paths,
                                  lead_paths_reference(synthetic_tables), check_dtype=False)


@pytest.mark.parametrize("conversion", ["lead", "opportunity", "closed_won", "order"])
def test_journeys_never_hold_later_or_other_peoples_touches(synthetic_tables, conversion):
    j = build_journeys(synthetic_tables, conversion=conversion)
    conv = j.touches[j.touches["converted"] == 1]
    assert (conv["ts"] <= conv["conversion_at"]).all()
    assert conv.groupby("journey_id")["person_id"].nunique().max() == 1
    recon = j.reconciliation.set_index(["item", "bucket"])
    parts = recon.loc["conversions"].drop(index="in")
    assert parts["n"].sum() == recon.loc[("conversions", "in"), "n"]
    assert parts["value"].sum() == pytest.approx(recon.loc[("conversions", "in"), "value"])


@pytest.fixture(scope="module")
def spark():
    pyspark = pytest.importorskip("pyspark", reason="the spark extra is part of .[dev]")
    session = (pyspark.sql.SparkSession.builder.master("local[2]").appName("closedloop-tests")
               .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    yield session
    session.stop()


@pytest.mark.parametrize("options", [
    {"conversion": "lead"},
    {"conversion": "closed_won", "collapse_repeats": True, "max_touches": 4},
    {"conversion": "order", "drop_direct": True, "level": "campaign"},
])
def test_spark_gives_identical_path_tables(synthetic_tables, spark, options):
    on_spark = build_journeys(synthetic_tables, engine="spark", spark=spark, **options)
    on_duckdb = build_journeys(synthetic_tables, **options)
    pd.testing.assert_frame_equal(on_spark.paths, on_duckdb.paths, check_dtype=False)
    pd.testing.assert_frame_equal(on_spark.reconciliation, on_duckdb.reconciliation, check_dtype=False)


def test_missing_table_column_and_naive_timestamps_are_named(tmp_path):
    from closedloop_nb.errors import DataValidationError

    t = tables([("v", day(1), "A")], [("v", "P1", day(1))], [("P1", day(1))])
    with pytest.raises(DataValidationError, match=r"<deals>: table missing: journeys ending at 'closed_won'"):
        build_journeys(t, conversion="closed_won")
    with pytest.raises(DataValidationError, match=r"column 'campaign': missing column"):
        build_journeys({**t, "touchpoints": t["touchpoints"].drop(columns="campaign")}, level="campaign")
    naive = t["touchpoints"].assign(timestamp=t["touchpoints"]["timestamp"].dt.tz_localize(None))
    naive.to_parquet(tmp_path / "touchpoints.parquet")
    t["identities"].to_parquet(tmp_path / "identities.parquet")
    t["leads"].to_parquet(tmp_path / "leads.parquet")
    naive_msg = r"touchpoints.parquet, column 'timestamp': timestamps without a time zone"
    with pytest.raises(DataValidationError, match=naive_msg):
        build_journeys(tmp_path)


def test_visitors_matched_to_several_people_are_counted():
    t = tables([("shared", day(1), "A"), ("other", day(2), "B")],
               [("shared", "P2", day(5)), ("shared", "P1", day(1)), ("other", "P2", day(2))],
               [("P1", day(1)), ("P2", day(2))])
    recon = build_journeys(t).reconciliation.set_index(["item", "bucket"])["n"]
    assert recon[("identities", "visitors matched to several people (counted for the earliest match)")] == 1


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

touch_rows = st.lists(st.tuples(st.sampled_from(["v1", "v2", "v3", "v4", "v5"]),
                                st.integers(0, 200), st.sampled_from(["A", "B", "C", "Direct"])),
                      min_size=1, max_size=30)
match_rows = st.lists(st.tuples(st.sampled_from(["v1", "v2", "v3", "v4", "v5"]),
                                st.sampled_from(["P1", "P2", "P3"]), st.integers(0, 200)), max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(touch_rows, match_rows, st.integers(1, 120), st.booleans(), st.booleans())
def test_property_no_later_and_no_foreign_touches(touches, matches, lookback, restart, collapse):
    t = tables([(v, day(d), ch) for v, d, ch in touches],
               [(v, p, day(d)) for v, p, d in matches] or [("v9", "P1", day(0))],
               [("P1", day(50)), ("P2", day(120)), ("P3", day(199))])
    j = build_journeys(t, lookback_days=lookback, restart_after_conversion=restart,
                       collapse_repeats=collapse, progress=False)
    jt = j.touches
    conv = jt[jt["converted"] == 1]
    assert (conv["ts"] <= conv["conversion_at"]).all()
    assert (conv["ts"] >= conv["conversion_at"] - pd.Timedelta(days=lookback)).all()
    # a journey's touches all belong to the person whose conversion it is
    owner = conv["journey_id"].str.removeprefix("lead:")
    assert (conv["person_id"] == owner).all()
    # every converting journey ends at or before its conversion, and no touch is in two journeys
    if restart:
        assert not jt["touch_id"].duplicated().any()


def test_journey_touches_carry_every_touch_attribute(synthetic_tables):
    touches = build_journeys(synthetic_tables, progress=False).touches
    for col in ("source", "medium", "campaign", "keyword", "landing_page", "interaction_type", "click_id"):
        assert col in touches.columns
    sample = touches.iloc[0]
    original = synthetic_tables["touchpoints"].set_index("touch_id").loc[sample["touch_id"]]
    assert sample["source"] == original["source"] and sample["ts"] == original["timestamp"]


def test_stitching_summary_counts_by_hand():
    from closedloop_nb.journeys import stitching_summary

    t = {"touchpoints": pd.DataFrame({"visitor_id": ["v1", "v2", "v3", "v3"]}),
         "identities": pd.DataFrame({"visitor_id": ["v1", "v2", "v2", "zz"],
                                     "person_id": ["p1", "p2", "p3", "p4"]}),
         "leads": pd.DataFrame({"person_id": ["p1", "p2", "p3", "p9"]}),
         "deals": pd.DataFrame({"deal_id": ["d1", "d2"], "person_id": ["p1", "p9"]})}
    s = stitching_summary(t).set_index("item")
    assert s.loc["visitors", "n"] == 3 and s.loc["visitors matched to a person", "n"] == 2
    assert s.loc["visitors matched to several people (earliest match used)", "n"] == 1
    assert s.loc["leads with web touches", "n"] == 3 and s.loc["leads without web touches", "n"] == 1
    assert s.loc["deals whose person has web touches", "share"] == 0.5


def test_a_separator_inside_a_name_never_splits_a_step_even_unvalidated(tmp_path):
    # `closedloop paths` reads Parquet folders without validating them: the journey SQL itself must
    # keep "Search > Paid" one step (written with "›", as validation writes such names)
    t = tables([("v", day(1), "Email"), ("v", day(2), "Email")], [("v", "P1", day(3))], [("P1", day(3))])
    t["touchpoints"].loc[1, "channel"] = "Search > Paid"
    for name, frame in t.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    assert paths_of(build_journeys(tmp_path)) == {"Email > Search \u203a Paid": (1, 0)}


def test_a_deal_with_three_contacts_is_credited_over_all_three_contacts_touches(tmp_path):
    # a buying committee: P1 is the deal's person, P2 and P3 its other contacts (deal_contacts);
    # each touched the site through one channel before the deal was created on day 10
    from closedloop_nb.metrics import deal_credits

    tp = pd.DataFrame([("v1", day(1), "Email"), ("v2", day(2), "Paid Search"),
                       ("v3", day(3), "Display"), ("v4", day(4), "Referral")],
                      columns=["visitor_id", "timestamp", "channel"]).assign(source="x", medium="y")
    ident = pd.DataFrame([("v1", "P1", day(1)), ("v2", "P2", day(2)), ("v3", "P3", day(3)),
                          ("v4", "P4", day(4))], columns=["visitor_id", "person_id", "matched_at"]
                         ).assign(method="form")
    leads = pd.DataFrame({"person_id": ["P1", "P2", "P3", "P4"],
                          "created_at": [day(1), day(2), day(3), day(4)]})
    deals = pd.DataFrame({"deal_id": ["D1"], "person_id": ["P1"], "created_at": [day(10)],
                          "amount": [900.0], "currency": ["GBP"], "stage": ["closed_won"], "won": [True],
                          "closed_at": [day(20)]})
    contacts = pd.DataFrame({"deal_id": ["D1", "D1", "D1"], "person_id": ["P1", "P2", "P3"],
                             "role": ["Economic Buyer", "Technical Buyer", "User"],
                             "is_primary": [True, False, False]})
    t = validate_tables({"touchpoints": tp, "identities": ident, "leads": leads, "deals": deals,
                         "deal_contacts": contacts}).tables
    committee = deal_credits(t, "linear").set_index("channel")["share"]
    # linear over the committee's three touches (P4, no contact of the deal, is left out); one deal
    assert committee.to_dict() == pytest.approx({"Email": 1 / 3, "Paid Search": 1 / 3, "Display": 1 / 3})
    one_person = deal_credits(t, "linear", unit="person").set_index("channel")["share"]
    assert one_person.to_dict() == {"Email": 1.0}
    j = build_journeys(t, conversion="closed_won")
    assert paths_of(j) == {"Email > Paid Search > Display": (1, 0), "Referral": (0, 1)}
    assert j.paths["total_conversion_value"].sum() == 900.0  # the deal's value once, not once per contact
    # the same through a run workspace (the report notebooks' path)
    import closedloop_nb as cl

    for name, frame in t.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    ws = cl.open_workspace(tmp_path, cache_dir=tmp_path / "ws")
    assert deal_credits(ws, "linear").set_index("channel")["share"].to_dict() == pytest.approx(
        {"Email": 1 / 3, "Paid Search": 1 / 3, "Display": 1 / 3})
