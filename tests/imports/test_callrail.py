"""CallRail calls (tests/data/exports/marketing/callrail_calls.csv, with the field names of CallRail's
API v3 call listing; see the README there): each call a touch of type call; qualifying calls identify the
caller by the keyed hash of the number. Expected values worked out by hand from the file."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb.errors import DataValidationError
from closedloop_nb.imports import import_source

CALLS = Path(__file__).parents[1] / "data" / "exports" / "marketing" / "callrail_calls.csv"
T = pd.Timestamp


def phone_hash(number: str, key: bytes = b"test-key") -> str:
    digits = "".join(ch for ch in number if ch.isdigit())
    return hmac.new(key, digits.encode(), hashlib.sha256).hexdigest()[:32]


def test_every_call_is_a_touch_of_type_call(hash_key):
    t = import_source("callrail", CALLS).tables["touchpoints"]
    assert t["interaction_type"].unique().tolist() == ["call"]
    rows = [[None if pd.isna(v) else v for v in r] for r in
            t[["touch_id", "source", "medium", "campaign", "keyword", "click_id", "channel"]].values.tolist()]
    assert rows == [
        # Google Paid / CPC -> google / cpc; the gclid kept
        ["callrail:CAL8f1a01", "google", "cpc", "brand_search", "acme crm", "Cj0KCQ_C3", "Paid Search"],
        ["callrail:CAL8f1a02", "google", "organic", None, None, None, "Organic Search"],
        ["callrail:CAL8f1a03", "(direct)", "(none)", None, None, None, "Direct"],
        # UTM tags win over CallRail's source; the e-mail in the keywords masked
        ["callrail:CAL8f1a04", "g2.com", "referral", "partner_reviews", "[email] pricing", None, "Referral"],
    ]
    # 10:00 at UTC-5 is 15:00 UTC
    assert t["timestamp"].iloc[0] == T("2024-01-03T15:00Z")
    assert t["visitor_id"].iloc[0] == "call:" + phone_hash("+16505551212")
    assert t["landing_page"].iloc[3] == "https://acme.example/pricing"
    assert "Ann" not in t.to_csv()


def test_qualifying_calls_identify_the_caller(hash_key):
    ident = import_source("callrail", CALLS).tables["identities"]
    # 185 s and 95 s qualify (60 s default); 20 s does not; the 300 s call is the same caller again
    assert ident[["person_id", "method"]].values.tolist() == [[phone_hash("+16505551212"), "call"],
                                                               [phone_hash("+14155550123"), "call"]]
    assert ident["matched_at"].tolist() == [T("2024-01-03T15:00Z"), T("2024-01-06T16:00Z")]


def test_first_call_rule_from_the_config(hash_key):
    ident = import_source("callrail", CALLS, config={"min_duration": 0, "first_call_only": True,
                                                    "answered_only": True}).tables["identities"]
    # first and answered: CAL8f1a01 and CAL8f1a02 (CAL8f1a04 was missed, CAL8f1a03 a repeat)
    assert ident["person_id"].tolist() == [phone_hash("+16505551212"), phone_hash("+14155550199")]


def test_missing_caller_column_is_named(tmp_path, hash_key):
    path = tmp_path / "calls.csv"
    path.write_text("id,start_time,duration\n1,2024-01-01T10:00:00Z,30\n")
    with pytest.raises(DataValidationError, match="no caller column"):
        import_source("callrail", path)
