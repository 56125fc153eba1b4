"""``python -m coview_server`` is the ``coview`` command."""

from .cli import main

raise SystemExit(main())
