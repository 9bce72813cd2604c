"""The models layer's error about weight files, apart so that every module of the layer can
raise it without importing the others (the registry and the weight readers import each other's
users)."""


class CheckpointError(ValueError):
    """A weight file that cannot be read or does not fit the model; the message names the file
    or the key."""
