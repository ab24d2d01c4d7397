"""Errors that reach a person: each carries one line that says what is wrong."""


class PneumoSyftError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero."""


class DataError(PneumoSyftError):
    """A data file or folder is unreadable, malformed or of the wrong shape."""


class PolicyError(PneumoSyftError):
    """A policy YAML file is malformed (message names file, line and reason)."""


class TokenError(PneumoSyftError):
    """A token is missing, malformed, badly signed, expired, revoked, ..."""


class SharingError(PneumoSyftError):
    """Secret sharing refused an input (overflow, mismatched shares, bad wire data)."""


class DomainError(PneumoSyftError):
    """The domain is unreachable, refused a request, or is in the wrong state."""
