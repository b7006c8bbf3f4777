"""Errors a user can cause: each message names the field, the value and what is allowed."""


class HeartMlopsError(Exception):
    """Base of the errors shown to users as one line, without a traceback."""


class DataError(HeartMlopsError):
    """The input data is missing, unreadable or violates the schema."""


class ConfigError(HeartMlopsError):
    """A setting or model_params.yaml entry is invalid."""


class RegistryError(HeartMlopsError):
    """The model registry has no such model/version, or cannot be reached."""


class StorageError(HeartMlopsError):
    """An object in the artifact store is missing or the store cannot be reached."""


class ExplanationError(HeartMlopsError):
    """No explanation can be given for a model; the message says why."""
