"""``python -m bridge`` is the ``bridge`` console command (see :mod:`bridge.entry`)."""

from bridge.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
