"""``python -m gpnas`` is the ``gpnas`` command."""

from gpnas.cli import main

main()
