"""``python -m fastpaca``: the same CLI as the ``fastpaca`` command."""

from fastpaca.cli import main

raise SystemExit(main())
