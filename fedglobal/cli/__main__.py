"""``python -m fedglobal.cli``: the same as the ``fedglobal`` command."""

from fedglobal.cli.main import console

console()
