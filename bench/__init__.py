"""Benchmarks of the chat server against peer servers (issue #5). Not tests; not run in CI.

``python -m bench`` runs the whole suite and prints the table of
``docs/benchmarks.md``; ``python -m bench --quick`` is a smoke run. Every server
runs on loopback, pinned to the server core(s); the load generator runs in
separate processes pinned to the other core(s).
"""
