"""Sub-commands of the ``hemolab`` command line, one module each (see :mod:`hemolab.cli`)."""
