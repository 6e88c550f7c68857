"""The Feast feature repo: definitions only (``feast apply`` imports every .py file here)."""
