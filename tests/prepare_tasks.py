"""Tasks for worker processes in tests/test_prepare.py, in a module of their own: a worker imports
the module of its task, and this one imports nothing heavy."""

import os


def die_at_five(_, item):
    if item == 5:
        os._exit(3)  # as the out-of-memory killer would
    return item
