"""Writes the GA4 BigQuery-export corpus in ga4/ (newline-delimited JSON, as BigQuery exports a table).

Field names, nesting and types follow Google's "[GA4] BigQuery Export schema" (see README.md): INT64
values as JSON strings where BigQuery's JSON export writes them so (event_timestamp in one file), the
event parameters as a repeated key/value record. Run ``python build_ga4.py`` to rebuild the files.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent / "ga4"


def p(key, value):
    kind = {int: "int_value", float: "double_value"}.get(type(value), "string_value")
    return {"key": key, "value": {kind: value}}


def event(name, ts, visitor, session=None, page=None, referrer=None, user_id=None, cts=None, stslc=None,
          params=(), ecommerce=None, ts_as_string=False):
    event_params = ([p("ga_session_id", session)] if session is not None else []) + list(params)
    if page:
        event_params.append(p("page_location", page))
    if referrer:
        event_params.append(p("page_referrer", referrer))
    row = {"event_date": "", "event_timestamp": str(ts) if ts_as_string else ts, "event_name": name,
           "event_params": event_params, "user_pseudo_id": visitor, "user_id": user_id,
           "traffic_source": {"name": "(direct)", "medium": "(none)", "source": "(direct)"}}
    if cts is not None:
        row["collected_traffic_source"] = cts
    if stslc is not None:
        row["session_traffic_source_last_click"] = stslc
    if ecommerce is not None:
        row["ecommerce"] = ecommerce
    return row


A, B, C, D, E, F = (f"{n}.1700000000" for n in ("1001", "2002", "3003", "4004", "5005", "6006"))
utm = {"manual_source": "newsletter", "manual_medium": "email", "manual_campaign_name": "spring_launch",
       "manual_term": "ann@example.com crm", "manual_content": "hero"}
stslc_utm = {"manual_campaign": {"source": "newsletter", "medium": "email", "campaign_name": "spring_launch",
                                 "term": "ann@example.com crm", "content": "hero"}}
stslc_ads = {"manual_campaign": None,
             "google_ads_campaign": {"customer_id": "1234567890", "campaign_id": "111", "campaign_name":
                                     "brand_search", "ad_group_id": "222", "ad_group_name": "acme crm brand"}}
stslc_direct = {"cross_channel_campaign": {"source": "(direct)", "medium": "(none)",
                                           "campaign_name": "(direct)"}}

day1 = [
    # A: UTM-tagged session; the landing page carries the visitor's e-mail in its query string
    event("session_start", 1704099600000000, A, 1704099600, cts=utm, stslc=stslc_utm,
          page="https://acme.example/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=spring_launch"
               "&email=ann%40example.com"),
    event("page_view", 1704099600200000, A, 1704099600, cts=utm, stslc=stslc_utm,
          page="https://acme.example/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=spring_launch"
               "&email=ann%40example.com"),
    # B: Google Ads click (auto-tagged: gclid, no UTM tags), then a lead with an internal user_id
    event("session_start", 1704103200000000, B, 1704103200, cts={"gclid": "Cj0KCQ_B1"}, stslc=stslc_ads,
          page="https://acme.example/?gclid=Cj0KCQ_B1"),
    event("page_view", 1704103201000000, B, 1704103200, stslc=stslc_ads, page="https://acme.example/product"),
    event("generate_lead", 1704103500000000, B, 1704103200, user_id="crm-000123", stslc=stslc_ads,
          page="https://acme.example/demo"),
    # C: untagged organic session (an export from before session_traffic_source_last_click existed)
    event("session_start", 1704110400000000, C, 1704110400, page="https://acme.example/blog/closed-loop",
          referrer="https://www.google.com/"),
    event("page_view", 1704110400300000, C, 1704110400, page="https://acme.example/blog/closed-loop",
          referrer="https://www.google.com/"),
]
d_events = [
    # D: direct session with a lead (two conversion events)
    event("session_start", 1704186000000000, D, 1704186000, page="https://acme.example/demo"),
    event("page_view", 1704186000100000, D, 1704186000, page="https://acme.example/demo"),
    event("generate_lead", 1704186300000000, D, 1704186000, user_id="crm-000456", page="https://acme.example/demo"),
    event("form_submit", 1704186301000000, D, 1704186000, user_id="crm-000456", page="https://acme.example/demo"),
]
day2 = [
    *d_events,
    # B returns directly and buys
    event("session_start", 1704189600000000, B, 1704189600, stslc=stslc_direct,
          page="https://acme.example/checkout"),
    event("purchase", 1704190200000000, B, 1704189600, user_id="crm-000123", stslc=stslc_direct,
          params=[p("currency", "EUR"), p("value", 149.0)], page="https://acme.example/checkout/done",
          ecommerce={"transaction_id": "T-1001", "purchase_revenue": 149.0,
                     "purchase_revenue_in_usd": 162.0}),
    # F: tagged by event parameters only; signs up with an e-mail address as user_id (against Google's policy)
    event("session_start", 1704193200000000, F, 1704193200,
          params=[p("source", "partner.example"), p("medium", "referral"), p("campaign", "spring_partners")],
          page="https://acme.example/partners?phone=%2B44%2020%207946%200958"),
    event("sign_up", 1704193500000000, F, 1704193200, user_id="Bob@Example.com", page="https://acme.example/welcome"),
    # an event outside any session (no ga_session_id)
    event("user_engagement", 1704193600000000, F),
]
day3_intraday = [
    # E: referral from Hacker News, from the streaming (intraday) table; the same row exported twice
    event("session_start", 1704272400000000, E, 1704272400, page="https://acme.example/",
          referrer="https://news.ycombinator.com/item?id=1", ts_as_string=True),
    event("session_start", 1704272400000000, E, 1704272400, page="https://acme.example/",
          referrer="https://news.ycombinator.com/item?id=1", ts_as_string=True),
]


def write(name, rows, date):
    with (HERE / name).open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({**r, "event_date": date}) + "\n")


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    write("events_20240101.json", day1, "20240101")
    write("events_20240102.json", day2, "20240102")
    write("events_intraday_20240102.json", d_events, "20240102")  # superseded by the daily table
    write("events_intraday_20240103.json", day3_intraday, "20240103")
