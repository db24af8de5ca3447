"""Stakeholder reports in a real browser (headless Chromium)."""
