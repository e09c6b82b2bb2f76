"""``python -m app`` opens the window; ``python -m app <verb> ...`` runs the CLI."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
