"""keyturn: a token service with rotating refresh tokens and real logout."""

__version__ = "0.1.0"
