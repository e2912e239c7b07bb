"""The end-of-run summary's value formats, as a user reads them."""

from __future__ import annotations

from spaceport.console import format_metric


def test_db_values_round_to_hundredths_without_a_minus_zero() -> None:
    assert format_metric(0.41, "db", {}) == "0.41 dB"
    assert format_metric(-0.002, "db", {}) == "0.00 dB"  # compression within noise of the original
    assert format_metric(-0.25, "db", {}) == "-0.25 dB"  # a real gain is still shown as one


def test_registered_images_show_the_total_and_psnr_says_which_views() -> None:
    assert format_metric(38, "registered", {"images": 40}) == "38 / 40"
    assert format_metric(27.346, "psnr", {"evalViews": "heldOut"}) == "27.35 dB (held-out views)"
