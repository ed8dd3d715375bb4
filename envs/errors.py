"""One exception type for bad input: scripts catch it and print its message as a one-line error."""


class SpirlError(Exception):
    """A user-facing error. The message is one line that says what is wrong and how to fix it."""
