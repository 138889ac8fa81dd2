"""``python -m bci.cli``: the same as the ``bci`` command."""

from bci.cli.main import main

raise SystemExit(main())
