"""End-to-end encrypted messaging between counsellors and the people they accompany."""

__version__ = "0.1.0"
