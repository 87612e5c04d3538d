"""The one exception users see: a single sentence naming the file and the fix."""


class LeansegError(Exception):
    """A problem the user can fix (bad path, malformed dataset, mismatched checkpoint...).

    The command line prints the message alone, without a traceback.
    """
