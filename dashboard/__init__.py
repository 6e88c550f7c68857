"""Dashboard: a thin layer over microsnoop and services."""
