"""Best-effort fan-out between processes: the port (``base``) and its adapters."""
