"""``python -m speechprompt_cli``: the ``speechprompt`` command."""

from . import main

main()
