"""Peer servers measured against the chat server, on the same workload.

None of them stores or checks anything: they relay a frame to the other
member of the pair and acknowledge it to the sender. They speak the subset of
the chat protocol the load generator uses (``auth``, ``message.send`` ->
``ack`` + ``message.created``); the Socket.IO peer carries the same payloads
as Socket.IO events with acknowledgements.
"""
