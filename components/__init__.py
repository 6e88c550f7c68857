"""Components: a thin layer over microsnoop and services."""
