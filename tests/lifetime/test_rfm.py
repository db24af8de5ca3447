"""rfm_summary against a plain pandas statement of the same definitions, and its refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime import rfm as rfm_module
from closedloop_nb.lifetime import rfm_summary


def reference(orders: pd.DataFrame, calibration_end, holdout_end=None, unit: str = "W") -> pd.DataFrame:
    """The definitions written out with group-bys: same-day orders merged, per-customer first and last
    day, repeat purchases after the first day, mean repeat spend."""
    days = {"D": 1.0, "W": 7.0}[unit]
    ts = pd.to_datetime(orders["timestamp"])
    ts = ts.dt.tz_localize(None) if ts.dt.tz is not None else ts
    daily = (pd.DataFrame({"c": orders["customer_id"], "d": ts.dt.normalize(), "v": orders["amount"]})
             .groupby(["c", "d"])["v"].sum().reset_index())
    cal_end = pd.Timestamp(calibration_end)
    first = daily.groupby("c")["d"].min()
    first = first[first <= cal_end]
    cal = daily[(daily["d"] <= cal_end) & daily["c"].isin(first.index)]
    repeat = cal[cal["d"] > cal["c"].map(first)]
    out = pd.DataFrame(index=pd.Index(first.index, name="customer_id"))
    out["frequency"] = repeat.groupby("c").size().reindex(out.index, fill_value=0).astype(int)
    out["recency"] = (cal.groupby("c")["d"].max() - first).dt.days / days
    out["T"] = (cal_end - first).dt.days / days
    out["monetary_value"] = repeat.groupby("c")["v"].mean().reindex(out.index, fill_value=0.0)
    if holdout_end is not None:
        end = pd.Timestamp(holdout_end)
        hold = daily[(daily["d"] > cal_end) & (daily["d"] <= end) & daily["c"].isin(out.index)]
        out["frequency_holdout"] = hold.groupby("c").size().reindex(out.index, fill_value=0).astype(int)
        out["monetary_value_holdout"] = hold.groupby("c")["v"].mean().reindex(out.index, fill_value=0.0)
        out["duration_holdout"] = (end - cal_end).days / days
    return out


def random_orders(seed: int, n: int = 3000, tz: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz=tz)
    return pd.DataFrame({
        "customer_id": rng.choice([f"c{i:03d}" for i in range(400)], n),
        # several orders a day for some customers, times of day included
        "timestamp": start + pd.to_timedelta(rng.integers(0, 300 * 24, n), unit="h"),
        "amount": rng.gamma(2.0, 20.0, n).round(2),
    })


@pytest.mark.parametrize("unit", ["W", "D"])
@pytest.mark.parametrize("tz", [None, "Europe/London"])
@pytest.mark.parametrize("threads", [False, True], ids=["one thread", "two threads"])
def test_rfm_equals_the_definitions(unit, tz, threads, monkeypatch):
    """Large tables are built on two threads (rows split between them); small ones on one."""
    monkeypatch.setattr(rfm_module, "_PARALLEL_ROWS", 0 if threads else 10**12)
    orders = random_orders(1, tz=tz)
    got = rfm_summary(orders, "2024-06-30", "2024-09-30", unit=unit)
    pd.testing.assert_frame_equal(got, reference(orders, "2024-06-30", "2024-09-30", unit), check_dtype=False)
    got = rfm_summary(orders.sample(frac=1, random_state=0), "2024-03-15", unit=unit)  # order of rows
    pd.testing.assert_frame_equal(got, reference(orders, "2024-03-15", unit=unit), check_dtype=False)
    in_order = orders.sort_values(["customer_id", "timestamp"])  # sorted input skips the sort
    pd.testing.assert_frame_equal(rfm_summary(in_order, "2024-06-30", "2024-09-30", unit=unit),
                                  reference(orders, "2024-06-30", "2024-09-30", unit), check_dtype=False)


def test_numeric_customer_ids_keep_their_type_and_order():
    orders = random_orders(2)
    orders["customer_id"] = orders["customer_id"].str[1:].astype(int)
    got = rfm_summary(orders, "2024-06-30")
    assert got.index.dtype.kind == "i" and got.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(got, reference(orders, "2024-06-30"), check_dtype=False)


@pytest.mark.parametrize("ids", ["dense", "gaps", "sparse", "negative", "unsigned"])
def test_integer_ids_numbered_by_table_or_by_hash_alike(ids):
    """Integer ids are numbered without hashing when their range is small; every kind of range gives
    the definitions' table, indexed by the ids in increasing order."""
    orders = random_orders(5)
    number = orders["customer_id"].str[1:].astype(np.int64)
    number = {"dense": number.rank(method="dense").astype(np.int64) - 1,  # every id 0..k-1 used
              "gaps": number * 3, "sparse": number * 10**12, "negative": number - 10**6,
              "unsigned": number.astype(np.uint64) + np.uint64(2**63)}[ids]
    orders["customer_id"] = number
    got = rfm_summary(orders, "2024-06-30", "2024-09-30")
    assert got.index.dtype == number.dtype and got.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(got, reference(orders, "2024-06-30", "2024-09-30"), check_dtype=False)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_any_datetime_resolution_and_dates_before_1970(unit):
    orders = random_orders(6)
    orders["timestamp"] = (orders["timestamp"] - pd.Timedelta(days=365 * 60)).astype(f"datetime64[{unit}]")
    got = rfm_summary(orders, "1964-06-30", "1964-09-30", unit="D")
    pd.testing.assert_frame_equal(got, reference(orders, "1964-06-30", "1964-09-30", "D"), check_dtype=False)
    strings = orders.assign(timestamp=orders["timestamp"].dt.strftime("%Y-%m-%d %H:%M"))
    pd.testing.assert_frame_equal(rfm_summary(strings, "1964-06-30", unit="D"),
                                  reference(orders, "1964-06-30", unit="D"), check_dtype=False)


def test_unusable_rows_are_named_not_dropped():
    orders = random_orders(3, n=20)
    bad = orders.copy()
    bad.loc[4, "timestamp"] = pd.NaT
    with pytest.raises(ValueError,
                       match=r"'timestamp': no valid date in 1 row\(s\), first rows \(1-based\) \[5\]"):
        rfm_summary(bad, "2024-06-30")
    bad = orders.copy()
    bad.loc[[2, 7], "customer_id"] = None
    with pytest.raises(ValueError, match=r"'customer_id': no customer in 2 row\(s\).*\[3, 8\]"):
        rfm_summary(bad, "2024-06-30")
    bad = orders.assign(customer_id=pd.array(np.arange(len(orders)), dtype="Int64"))
    bad.loc[3, "customer_id"] = pd.NA  # nullable integers can be missing too
    with pytest.raises(ValueError, match=r"'customer_id': no customer in 1 row\(s\).*\[4\]"):
        rfm_summary(bad, "2024-06-30")
    bad = orders.astype({"amount": object})
    bad.loc[0, "amount"] = "n/a"
    with pytest.raises(ValueError, match="'amount': not a finite number"):
        rfm_summary(bad, "2024-06-30")
    with pytest.raises(ValueError, match=r"'amount': not a finite number in 1 row\(s\).*\[6\]"):
        rfm_summary(orders.assign(amount=orders["amount"].where(orders.index != 5, np.inf)), "2024-06-30")
    with pytest.raises(KeyError, match="amount"):
        rfm_summary(orders.drop(columns="amount"), "2024-06-30")


def test_no_orders_gives_an_empty_table():
    empty = random_orders(4).iloc[:0]
    got = rfm_summary(empty, "2024-06-30", "2024-09-30")
    assert got.empty and list(got.columns) == ["frequency", "recency", "T", "monetary_value",
                                               "frequency_holdout", "monetary_value_holdout",
                                               "duration_holdout"]
