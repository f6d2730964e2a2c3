"""The one exception a user can cause. The CLI prints its message on one line and exits 2."""


class XlingError(Exception):
    """A problem with the user's input (config, corpus, run directory) that they can fix.

    The message must say what is wrong *and* what to do about it, in one line.
    """
