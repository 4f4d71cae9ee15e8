"""``python -m tui_mail …`` = ``tui-mail …`` (what ``tui-mail web`` runs per browser session)."""

import sys

from tui_mail.cli import main

sys.exit(main())
