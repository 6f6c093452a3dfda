"""``python -m feedvault`` is the ``feedvault`` command."""

from feedvault.cli import main

raise SystemExit(main())
