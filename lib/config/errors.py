"""The one exception type of the config system."""
from lib.errors import UserError


class ConfigError(UserError, ValueError):
    """A recipe or override that does not fit the schema; the message is one line for the user."""
