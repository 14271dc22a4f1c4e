"""The one exception hierarchy: every error a user can act on, turned into a message by the CLI."""


class PiwheelsError(Exception):
    """An error the CLI reports as one line naming the input at fault."""

    exit_code = 1


class ConfigError(PiwheelsError):
    """A configuration key or value is wrong."""

    exit_code = 2


class InputError(PiwheelsError):
    """A name, version, requirement or file given by the user is malformed or unknown."""

    exit_code = 2


class UpstreamError(PiwheelsError):
    """The upstream index is unreachable or answered with something we cannot use."""


class DatabaseError(PiwheelsError):
    """The database is missing, unreachable or at a schema this code does not know."""


class VerifyError(PiwheelsError):
    """A wheel is not what its build said it is."""


class IntegrityError(VerifyError):
    """A wheel did not arrive as the builder reported it: the builder, not the project, is at fault."""
