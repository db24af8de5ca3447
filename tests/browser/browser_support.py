"""Test support for the browser tests: a poisoned copy of the sample, and where artefacts are kept.

Campaign names carry an ``<img onerror>`` and a ``<script>`` payload and an e-mail address; some
people's ids are e-mail addresses (in every table that names them); some deal ids carry markup; a few
deals' currency codes are markup (rows a validator should reject). Nothing else changes, so every
notebook has the same work to do as on the sample.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from closedloop_nb.config import PROJECT_DIR

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
ADDRESS = "ann.lee@example.com"
#: Where screenshots and PDFs of the tests are kept.
ARTEFACTS = Path(os.environ.get("CLOSEDLOOP_TEST_ARTEFACTS", PROJECT_DIR / "reports" / "test-artefacts"))
#: Every raw address planted (none may appear in any output file).
ADDRESSES = (ADDRESS, *(f"buyer{i}@example.com" for i in range(40)))


def write_poisoned(sample: Path, out: Path) -> Path:
    """Copy ``sample`` (a folder of canonical Parquet tables) to ``out`` with the poison above."""
    out.mkdir(parents=True, exist_ok=True)
    t = {p.stem: pd.read_parquet(p) for p in sample.glob("*.parquet")}
    campaigns = t["touchpoints"]["campaign"].dropna().value_counts().index[:2]
    names = {campaigns[0]: f"{IMG}{campaigns[0]} {ADDRESS}", campaigns[1]: f"{SCRIPT}{campaigns[1]}"}
    for table in ("touchpoints", "spend"):
        t[table]["campaign"] = t[table]["campaign"].replace(names)
    # people who won deals get e-mail addresses as ids, consistently in every table
    won = t["deals"].loc[t["deals"]["won"].astype(bool), "person_id"].drop_duplicates().iloc[:40]
    people = dict(zip(won, ADDRESSES[1:], strict=False))
    for table, column in (("identities", "person_id"), ("leads", "person_id"), ("deals", "person_id"),
                          ("subscriptions", "customer_id"), ("orders", "customer_id")):
        if table in t:
            t[table][column] = t[table][column].replace(people)
    deals = t["deals"]
    marked = deals["deal_id"].iloc[:5]
    ids = {d: f"<b>{d}</b>" for d in marked}
    for table in ("deals", "stage_history"):
        t[table]["deal_id"] = t[table]["deal_id"].replace(ids)
    lost = deals.index[~deals["won"].astype(bool)][:3]
    deals.loc[lost, "currency"] = IMG
    for name, frame in t.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    return out


def keep(path: Path) -> Path:
    """Copy a test artefact to :data:`ARTEFACTS`."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTEFACTS / path.name
    shutil.copyfile(path, target)
    return target
