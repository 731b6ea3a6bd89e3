"""``python -m hemolab`` is the same as the ``hemolab`` command."""

from hemolab.cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
