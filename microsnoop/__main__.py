"""``python -m microsnoop`` (used by torchrun)."""

from microsnoop.cli import main

main()
