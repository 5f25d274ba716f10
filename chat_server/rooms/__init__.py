"""The conversation domain: membership, sequence, message types, read state, recovery."""
