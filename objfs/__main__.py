"""python -m objfs: the same as the `objfs` command."""

from __future__ import annotations

from objfs.cli import main

main()
