"""``python -m relay …`` — the same commands as ``tui-mail relay …`` (used by the daemon launcher)."""

import sys

from relay.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
