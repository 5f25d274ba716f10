"""HTTP endpoints, thin: parse, call a service, shape the answer."""
