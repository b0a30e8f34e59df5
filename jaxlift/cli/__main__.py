"""``python -m jaxlift.cli``: the ``jaxlift`` command."""
from jaxlift.cli.main import main

raise SystemExit(main())
