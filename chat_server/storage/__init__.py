"""Storage ports (``base``) and their adapters (``mongo``, ``embedded``)."""
