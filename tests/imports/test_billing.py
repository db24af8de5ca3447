"""Stripe and ChartMogul imports: MRR movements worked out by hand from the subscription objects and
activities in tests/data/exports/crm/ (see its README), customers joined by the keyed hash of their e-mail."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb.errors import DataValidationError
from closedloop_nb.imports import import_source

CRM = Path(__file__).parents[1] / "data" / "exports" / "crm"
T = pd.Timestamp


def hashed(email: str) -> str:
    return hmac.new(b"test-key", email.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]


def test_stripe_mrr_movements_from_subscription_items(hash_key):
    res = import_source("stripe", CRM / "stripe", config={"as_of": "2026-06-30"})
    s = res.tables["subscriptions"]
    got = {
        (c, m.strftime("%Y-%m"), mv, d, r)
        for c, m, mv, d, r in s[["customer_id", "month", "movement", "mrr_delta", "mrr"]].itertuples(
            index=False
        )
    }
    ann, bo, cy, di = (
        hashed(e) for e in ("ann@example.com", "bo@example.com", "cy@example.com", "di@example.com")
    )
    assert got == {
        (ann, "2026-01", "new", 100.0, 100.0),  # 2 seats x 50.00 a month
        (ann, "2026-03", "expansion", 20.0, 120.0),  # a second subscription (add-on) of 20.00
        (bo, "2026-01", "new", 75.0, 75.0),  # 1,200.00 a year = 100 a month, less 25%
        (cy, "2026-02", "new", 100.0, 100.0),  # 300.00 a quarter, counted from the trial's end
        (cy, "2026-05", "churn", -100.0, 0.0),  # cancel at period end, 15 May
        (di, "2026-01", "new", 40.0, 40.0),
        (di, "2026-02", "churn", -40.0, 0.0),
        (di, "2026-04", "reactivation", 40.0, 40.0),
        ("stripe:cus_F", "2026-01", "new", 90.0, 90.0),  # 100.00 less 10.00 off; no e-mail
    }
    assert s.set_index("customer_id").loc["stripe:cus_F", "currency"] == "EUR"
    assert "1 ended before its trial did" in " ".join(res.notes)  # sub_E1 never counts


def test_stripe_scheduled_cancellations_after_the_export_are_not_churn_yet(hash_key):
    res = import_source("stripe", CRM / "stripe", config={"as_of": "2026-05-01"})
    s = res.tables["subscriptions"]
    assert not ((s["customer_id"] == hashed("cy@example.com")) & (s["movement"] == "churn")).any()


def test_stripe_paid_invoices_are_orders(hash_key):
    res = import_source("stripe", CRM / "stripe", config={"as_of": "2026-06-30"})
    o = res.tables["orders"]
    assert o[["order_id", "timestamp", "amount", "currency"]].values.tolist() == [
        ["in_1", T("2026-01-10T10:05:00Z"), 100.0, "USD"],
        ["in_2", T("2026-01-21T09:00:00Z"), 900.0, "USD"],
    ]
    c = res.report.counts["orders"]
    assert (c["rows_in"], c["rows_kept"], c["rows_filtered"]) == (3, 2, 1)


def test_chartmogul_customers_join_by_email_not_by_the_billing_id(hash_key):
    res = import_source("chartmogul", CRM / "chartmogul")
    s = res.tables["subscriptions"]
    assert s["customer_id"].tolist() == [
        hashed("ann@example.com"),
        hashed("ann@example.com"),
        hashed("bo@example.com"),
        hashed("ann@example.com"),
        "chartmogul:cus_0a1b2c3d-0000-4000-8000-000000000009",
    ]
    assert s["mrr"].tolist() == [100.0, 150.0, 80.0, 0.0, 50.0]  # cents to units
    # 10:00 at UTC-5 on 15 January is still January in UTC
    assert s["month"].tolist()[:3] == [T("2026-01-01"), T("2026-03-01"), T("2026-02-01")]
    assert "4 of 5 activities joined by the keyed hash" in " ".join(res.notes)


def test_chartmogul_external_id_as_the_crms_id_and_without_customers(tmp_path, hash_key):
    res = import_source(
        "chartmogul", CRM / "chartmogul" / "activities.csv", config={"customer_id": "external_id"}
    )
    assert res.tables["subscriptions"]["customer_id"].tolist()[:2] == ["cus_A", "cus_A"]
    res = import_source("chartmogul", CRM / "chartmogul" / "activities.csv")
    assert "MRR cannot join the CRM's people" in " ".join(res.notes)
    with pytest.raises(DataValidationError, match="no ChartMogul activities export found"):
        import_source("chartmogul", CRM / "chartmogul" / "customers.csv")


def test_pipedrive_deals_persons_and_organizations(hash_key):
    res = import_source("pipedrive", CRM / "pipedrive", config={"stages": {"1": "opportunity"}})
    deals = res.tables["deals"].set_index("deal_id")
    assert deals.loc["101", "person_id"] == hashed("ann@example.com")  # the first of two e-mails
    assert deals.loc["101", ["amount", "currency", "stage", "won", "account_id"]].tolist() == [
        12500.0,
        "EUR",
        "closed_won",
        True,
        "70",
    ]
    # API times are UTC
    assert deals.loc["101", "closed_at"] == T("2026-02-20T16:30:00Z")
    assert deals.loc["102", "stage"] == "closed_lost" and deals.loc["103", "stage"] == "proposal"  # 60%
    assert pd.isna(deals.loc["104", "person_id"]) and deals.loc["104", "stage"] == "opportunity"
    c = res.report.counts["leads"]
    assert (c["rows_in"], c["rows_kept"], c["rows_collapsed"]) == (4, 3, 1)  # ANN@ is Ann
