"""The tiered cache's variants (issue 15; README "Tiered tables"): chosen by
environment variables read when a lookup group is built. GPU tests of tiered
tables take the `tiered_variant` fixture (tests/gpu/conftest.py) and run
under each; select one with -k (e.g. -k list_probe)."""

TIERED_VARIANTS = {
    "default": {},
    "list_probe": {"TIEMB_TIERED_PROBE": "list"},
    "list_reads": {"TIEMB_TIERED_HOST_READS": "list"},
    "list_both": {"TIEMB_TIERED_PROBE": "list", "TIEMB_TIERED_HOST_READS": "list"},
    # One lane per unique id over the listed dedup's list (probe_lane_kernel).
    "lane_probe": {"TIEMB_TIERED_PROBE": "lane"},
    "lane_list_reads": {"TIEMB_TIERED_PROBE": "lane", "TIEMB_TIERED_HOST_READS": "list"},
}
TIERED_ENV = ("TIEMB_TIERED_PROBE", "TIEMB_TIERED_HOST_READS", "TIEMB_TIERED_INLINE_HOST_READS")
