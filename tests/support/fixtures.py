"""The real scanner series the tests use (in ../shared/fixtures)."""

from __future__ import annotations

SERIES = (
    "ge_epi_nih_10vol",
    "philips_epi_magdeburg",
    "siemens_mosaic_ax_35sl",
    "siemens_mosaic_ep2d_int_6vol",
    "siemens_mosaic_ep2d_int_HF_6vol",
    "siemens_xa30_enhanced_bold_20vol",
    "ge_hyperband_hb3_48sl",
    "siemens_xa60_enhanced_sms2",
)
