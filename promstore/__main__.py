"""``python -m promstore`` is the ``promstore`` command."""

import sys

from .cli import main

sys.exit(main())
