"""The errors a user can act on, and the exit statuses the scripts end with."""

# Exit statuses shared by the scripts: 1 for a UserError, 130 for Ctrl-C (128 + SIGINT), as shells do.
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix, stated in one sentence that names the file or value and what to do.

    Scripts catch this one class at their top and print the message alone, never a traceback.
    """
