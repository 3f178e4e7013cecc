"""``python -m lyra.cli``: the ``lightning`` command."""

from lyra.cli.lightning_cli import console_main

console_main()
