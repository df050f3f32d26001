"""``python -m islet_imaging`` runs the command line."""

import sys

from islet_imaging.cli import main

sys.exit(main())
