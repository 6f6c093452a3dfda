"""``python -m engine`` is the ``feedvault`` command."""

from engine.cli import main

raise SystemExit(main())
