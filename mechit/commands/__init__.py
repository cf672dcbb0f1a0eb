"""Subcommands of the ``mechit`` command, one module each (see :mod:`mechit.cli`)."""
