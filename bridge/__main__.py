"""``python -m bridge`` is the ``bridge`` console command."""

from bridge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
