"""Row checks of large Parquet files in SQL (``ingest.suspect_sql``): DuckDB reads the file, picks out
the rows the pandas checks could flag or change, and pandas checks those alone. The reference is
validation.py run on the whole table (``load_dataset``): the report (problems, rows, counts, messages)
and the tables must come out the same, on crafted files with every kind of bad value and on random
ones, while pandas sees only the rows picked out (plus one good row per column)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_reference import assert_same as same_as_reference

import closedloop_nb.ingest as ingest_mod
from closedloop_nb import load_dataset
from closedloop_nb.ingest import suspect_sql
from closedloop_nb.schema import table_spec


def assert_same(items, chunk_rows: int, **kw) -> None:
    """The engine's report (counts to the last bit) and tables equal load_dataset's."""
    same_as_reference(items, chunk_rows, exact_counts=True, **kw)


@pytest.fixture
def seen(monkeypatch):
    """Which tables took the SQL path, and how many rows each pandas check was given."""
    out: dict[str, list] = {"sql": [], "checked": []}
    in_sql, row_check = ingest_mod._Table._check_rows_in_sql, ingest_mod._RowCheck.__init__

    def spy_sql(self, *args):
        took = in_sql(self, *args)
        if took:
            out["sql"].append(self.name)
        return took

    def spy_check(self, frame, spec, *args, **kw):
        out["checked"].append((spec.name, len(frame)))
        row_check(self, frame, spec, *args, **kw)

    monkeypatch.setattr(ingest_mod._Table, "_check_rows_in_sql", spy_sql)
    monkeypatch.setattr(ingest_mod._RowCheck, "__init__", spy_check)
    return out


TS = pa.timestamp("us", tz="UTC")
TOUCH_TYPES = {"touch_id": pa.string(), "visitor_id": pa.string(), "timestamp": TS, "source": pa.string(),
               "medium": pa.string(), "campaign": pa.string(), "keyword": pa.string(),
               "landing_page": pa.string(), "interaction_type": pa.string(), "click_id": pa.string(),
               "click_id_type": pa.string(), "channel": pa.string()}


def good_touch(i: int) -> dict:
    return {"touch_id": f"t{i}", "visitor_id": f"v{i % 7}",
            "timestamp": pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=i),
            "source": "google", "medium": "cpc", "campaign": "brand", "keyword": None,
            "landing_page": "/pricing", "interaction_type": "session", "click_id": None,
            "click_id_type": None, "channel": "Paid Search"}


#: One bad (or odd) value per row, each with what validation.py does with it.
BAD_TOUCHES = [
    {"touch_id": " t_ws "},                      # trimmed
    {"touch_id": ""},                            # generated from the row
    {"touch_id": "NULL"},                        # a placeholder: generated
    {"touch_id": None},                          # generated
    {"touch_id": "x" * 1001},                    # id too long: rejected
    {"touch_id": "t\u00e4"},                     # non-ASCII at the end: kept as it is
    {"visitor_id": None},                        # missing: rejected
    {"visitor_id": "n/a"},                       # placeholder for a missing id: rejected
    {"visitor_id": "\u00a0v1"},                  # no-break space: trimmed
    {"visitor_id": "v2\t"},                      # tab: trimmed
    {"timestamp": None},                         # missing: rejected
    {"timestamp": pd.Timestamp("1900-01-01", tz="UTC")},
    {"timestamp": pd.Timestamp("2200-06-01", tz="UTC")},
    {"source": "goo>gle"},                       # path separator replaced
    {"source": " google"},
    {"source": ""},                              # missing: rejected
    {"source": "s" * 1200},                      # cut to 1,000 characters
    {"medium": None},
    {"campaign": "spring > eu"},
    {"campaign": "  "},                          # blank: missing (nullable)
    {"campaign": "caf\u00e9"},
    {"interaction_type": "telepathy"},           # not an allowed value
    {"interaction_type": " session "},           # trimmed, then allowed
    {"interaction_type": "SESSION"},
    {"click_id": "none"},                        # placeholder read as missing (kept)
    {"channel": None},                           # filled by the channel rules
    {"channel": "Paid > Search"},
    {"keyword": "kw\u2028"},                     # line separator
    {"keyword": "\u3000kw"},                     # ideographic space
    {"landing_page": "/p\u200b"},                # zero-width space (not white space)
    {"keyword": "\U0001f642"},
    {"source": "weird", "medium": "weirder", "channel": None},  # no channel rule matches
]


def touch_frame(n_good: int = 40, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = [good_touch(i) for i in range(n_good)]
    for k, bad in enumerate(BAD_TOUCHES):  # spread among the good rows
        rows.insert(1 + 2 * k, {**good_touch(1000 + k), **bad})
    rows.append(good_touch(0))                                  # an exact duplicate (folded)
    rows.append({**good_touch(1), "source": "bing"})            # same touch_id, other values
    frame = pd.DataFrame(rows)
    return frame.drop(columns=list(drop))


def write(frame: pd.DataFrame, path, types: dict) -> None:
    schema = pa.schema([(c, types[c]) for c in frame.columns])
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)


@pytest.mark.parametrize("chunk_rows", [3, 40, 10_000])
def test_touches_with_every_kind_of_bad_value_give_the_reference_report(tmp_path, seen, chunk_rows):
    frame = touch_frame()
    write(frame, tmp_path / "touchpoints.parquet", TOUCH_TYPES)
    assert_same({"touchpoints": tmp_path / "touchpoints.parquet"}, chunk_rows)
    if chunk_rows < len(frame):
        assert seen["sql"] == ["touchpoints"]
        # pandas saw the rows picked out (with one good row per column), never the good ones
        assert max(n for _, n in seen["checked"]) < len(frame) - 20
    else:
        assert seen["sql"] == []


def test_ids_missing_from_the_file_are_generated_as_pandas_generates_them(tmp_path, seen):
    write(touch_frame(drop=("touch_id",)), tmp_path / "touchpoints.parquet", TOUCH_TYPES)
    assert_same({"touchpoints": tmp_path / "touchpoints.parquet"}, 5)
    assert seen["sql"] == ["touchpoints"]


def test_a_clean_file_is_checked_in_pandas_on_one_row_per_column_only(tmp_path, seen):
    frame = pd.DataFrame([good_touch(i) for i in range(500)])
    write(frame, tmp_path / "touchpoints.parquet", TOUCH_TYPES)
    assert_same({"touchpoints": tmp_path / "touchpoints.parquet"}, 100)
    assert seen["sql"] == ["touchpoints"]
    assert [n for t, n in seen["checked"] if t == "touchpoints"][0] <= len(TOUCH_TYPES)


def test_other_tables_without_money_in_sql_with_their_references(tmp_path, seen):
    touches = pd.DataFrame([good_touch(i) for i in range(30)])
    write(touches, tmp_path / "touchpoints.parquet", TOUCH_TYPES)
    ids = pd.DataFrame({
        "visitor_id": ["v1", "v2", " v3", "v404", None, "v5", "v6", "v1", "v1", "v2"],
        "person_id": ["p1", "p2", "p3", "p4", "p5", "NULL", "p6", "p1", "p1", "p7"],
        "matched_at": pd.to_datetime(["2024-01-02"] * 8 + [None, "2024-01-03"], utc=True),
        "method": ["form", "FORM", "chat", "login", "call", "form", "fax", "form", "form", "crm_import"],
    })
    history = pd.DataFrame({
        "deal_id": [f"d{i}" for i in range(10)],
        "stage": ["opportunity", "won?", None, "proposal", "closed_won", "opportunity", "proposal",
                  "closed_lost", "opportunity", "opportunity"],
        "entered_at": pd.to_datetime(["2024-02-01"] * 10, utc=True),
        "amount": [100.0, np.nan, np.inf, -5.0, 2e12, None, 0.0, -0.0, 1e12, 12.5],
    })
    contacts = pd.DataFrame({"deal_id": ["d1", "d1", "d2", "d3", "d3", "d4"],
                             "person_id": ["p1", "p2", " p3", "p4", "p4", "p9"],
                             "role": ["Decision Maker", None, "", "A > B", "A > B", "User"],
                             "is_primary": [True, None, False, True, True, None]})
    write(ids, tmp_path / "identities.parquet", {"visitor_id": pa.string(), "person_id": pa.string(),
                                                   "matched_at": TS, "method": pa.string()})
    write(history, tmp_path / "stage_history.parquet", {"deal_id": pa.string(), "stage": pa.string(),
                                                         "entered_at": TS, "amount": pa.float64()})
    write(contacts, tmp_path / "deal_contacts.parquet", {"deal_id": pa.string(), "person_id": pa.string(),
                                                          "role": pa.string(), "is_primary": pa.bool_()})
    items = {p.stem: p for p in tmp_path.glob("*.parquet")}
    assert_same(items, 4)
    assert sorted(seen["sql"]) == sorted(items)


def test_columns_not_stored_natively_go_through_pandas_as_before(tmp_path, seen):
    frame = touch_frame()
    frame["timestamp"] = frame["timestamp"].astype(str).replace("NaT", None)  # text, not timestamps
    write(frame, tmp_path / "touchpoints.parquet", {**TOUCH_TYPES, "timestamp": pa.string()})
    assert_same({"touchpoints": tmp_path / "touchpoints.parquet"}, 7)
    assert seen["sql"] == []


def test_money_tables_stay_in_pandas(tmp_path, seen):
    leads = pd.DataFrame({"person_id": [f"p{i}" for i in range(8)],
                          "created_at": pd.to_datetime(["2024-01-01"] * 8, utc=True)})
    deals = pd.DataFrame({"deal_id": [f"d{i}" for i in range(8)], "person_id": [f"p{i}" for i in range(8)],
                          "created_at": pd.to_datetime(["2024-02-01"] * 8, utc=True),
                          "amount": [1.0, -1.0, 5.0, np.nan, 3.0, 2.0, 1.0, 9.0],
                          "currency": ["usd", "USD", "USD", "USD", "XXX1", "USD", "USD", "USD"]})
    leads.to_parquet(tmp_path / "leads.parquet")
    deals.to_parquet(tmp_path / "deals.parquet")
    assert_same({"leads": tmp_path / "leads.parquet", "deals": tmp_path / "deals.parquet"}, 3)
    assert seen["sql"] == ["leads"]


def test_the_condition_picks_out_every_row_pandas_flags_or_changes_and_no_good_one():
    frame = touch_frame(n_good=10).assign(_row=lambda f: np.arange(1, len(f) + 1))
    con = duckdb.connect()
    con.register("raw", pa.Table.from_pandas(frame, preserve_index=False))
    where = suspect_sql(table_spec("touchpoints"), list(TOUCH_TYPES))
    picked = {r[0] for r in con.sql(f"SELECT _row FROM raw WHERE {where}").fetchall()}
    check = ingest_mod._RowCheck(frame.assign(_file="touchpoints.parquet"), table_spec("touchpoints"), None)
    check.run()
    changed = check.flagged.copy()
    for c in TOUCH_TYPES:
        if c != "timestamp":
            before, after = frame[c].astype(object), check.df[c].astype(object)
            changed |= ~((before == after) | (before.isna() & after.isna())).to_numpy(bool)
    rows = frame["_row"].to_numpy()
    assert set(rows[changed]) <= picked
    good = frame["touch_id"].isin([f"t{i}" for i in range(10)]).to_numpy() & (frame["source"] == "google")
    assert not set(rows[good.to_numpy(bool)]) & picked  # the good rows (and their duplicates) are left
    assert len(picked) == len(BAD_TOUCHES) - 2  # all but the two empty channels (filled later, in SQL)


# --- random files --------------------------------------------------------------------------------

POOLS = {
    "touch_id": ["t1", "t2", "t3", " t4", "", "null", None, "T5\u00a0", "x" * 1001],
    "visitor_id": ["v1", "v2", "v1", "", " v3 ", "None", None, "v\u00e9"],
    "source": ["google", "bing", "(direct)", " google", "a>b", "", None, "s" * 1001],
    "medium": ["cpc", "organic", "(none)", "email", "cpc ", None, "\t"],
    "campaign": ["brand", None, "", "spring > eu", "caf\u00e9", " x"],
    "interaction_type": ["session", "ad_click", None, "SESSION", "fax", " call"],
    "click_id": [None, "gclid-1", "none", "#N/A", " c"],
    "channel": ["Paid Search", "Organic Search", None, "Paid > Social", "Email "],
}


@st.composite
def touch_tables(draw):
    n = draw(st.integers(3, 24))

    def column(pool: list) -> list:  # mostly the first (good) value, so that one bad value is alone
        return draw(st.lists(st.sampled_from(pool[:1] * 3 * len(pool) + pool), min_size=n, max_size=n))

    cols = {c: column(pool) for c, pool in POOLS.items()}
    cols["touch_id"] = [f"t{i}" if v == "t1" else v for i, v in enumerate(cols["touch_id"])]
    hours = column([0, 1, 2, None, -10 ** 6, 2 * 10 ** 6])
    base = pd.Timestamp("2024-03-01", tz="UTC")
    cols["timestamp"] = [None if h is None else base + pd.Timedelta(hours=h) for h in hours]
    return pd.DataFrame(cols), draw(st.integers(1, 6))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=touch_tables())
def test_random_touch_files_give_the_reference_report(tmp_path_factory, data):
    frame, chunk_rows = data
    path = tmp_path_factory.mktemp("random") / "touchpoints.parquet"
    write(frame, path, TOUCH_TYPES)
    assert_same({"touchpoints": path}, chunk_rows)


@pytest.mark.parametrize("chunk_rows", [7, 10_000])
def test_a_misspelled_column_of_a_large_parquet_file_is_named_as_in_a_small_one(tmp_path, seen, chunk_rows):
    # loaders.read_mapped warns of a column not in the data model (campaing: did you mean campaign?);
    # a file read in row groups (SQL checks, or pandas chunks for money tables) must say so too
    touches = touch_frame().rename(columns={"campaign": "campaing"})
    write(touches, tmp_path / "touchpoints.parquet", {**TOUCH_TYPES, "campaing": pa.string()})
    leads = pd.DataFrame({"person_id": [f"p{i}" for i in range(12)],
                          "created_at": pd.to_datetime(["2024-01-01"] * 12, utc=True)})
    deals = leads.assign(deal_id=[f"d{i}" for i in range(12)], amount=5.0, currency="USD", stge="won")
    leads.to_parquet(tmp_path / "leads.parquet")
    deals.to_parquet(tmp_path / "deals.parquet")
    items = {n: tmp_path / f"{n}.parquet" for n in ("touchpoints", "leads", "deals")}
    warned = [p.message() for p in load_dataset(items).report.problems if "ignored" in p.reason]
    assert any("'campaing'" in w and "did you mean 'campaign'" in w for w in warned)
    assert any("'stge'" in w for w in warned)
    assert_same(items, chunk_rows)
    assert ("touchpoints" in seen["sql"]) == (chunk_rows < len(touches))
