"""The one exception type for mistakes a user can fix by editing a config or a command line."""

from __future__ import annotations


class ConfigError(Exception):
    """A user/config error: one line naming the key, the bad value and the valid choices.

    The CLI prints ``error: <message>`` to stderr and exits with status 2, without a
    traceback. Line breaks in the message are folded into ``"; "`` so it stays one line.
    """

    def __init__(self, message: str) -> None:
        lines = [part.strip() for part in str(message).splitlines() if part.strip()]
        super().__init__("; ".join(lines))


class FileFormatError(ConfigError, ValueError):
    """A policy or checkpoint file that is not valid evolstm data: crafted (it names code),
    corrupted, truncated or of another kind. The message starts with the file's path."""
