"""gridshift: a carbon-aware job scheduler (import package ``scheduler``)."""

__version__ = "0.1.0"
