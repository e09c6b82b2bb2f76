"""``python -m app`` opens the window; ``python -m app <verb> ...`` runs the CLI."""

from __future__ import annotations

import sys

from app.cli import COMMANDS


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS or "--version" in sys.argv[1:2]:
        from app.cli import main as cli_main

        return cli_main(sys.argv[1:])
    from app.ui.launch import main as gui_main

    return gui_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
