"""``python -m sslab COMMAND ...``: the same as the ``sslab`` command (:mod:`sslab.cli`)."""

from sslab.cli import main

main()
