"""The one exception type for user mistakes.

Raise `UserError` (or a subclass) for anything the user can fix: a bad setting, a missing
or corrupt data file, an incompatible workdir. The binaries print its message on one line
and exit 2; every other exception is a bug and keeps its full traceback. It derives from
ValueError so that code catching ValueError around user input keeps working.
"""


class UserError(ValueError):
  """A mistake in the user's input (config, flags, files), reported without a traceback."""


class UserFileNotFoundError(UserError, FileNotFoundError):
  """A file or directory the user named (or that a setting implies) does not exist."""


class UserFileExistsError(UserError, FileExistsError):
  """An output path the user named exists and would be overwritten."""
