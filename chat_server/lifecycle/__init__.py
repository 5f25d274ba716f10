"""The data lifecycle: retention, erasure, archiving, access requests (``docs/privacy.md``)."""
