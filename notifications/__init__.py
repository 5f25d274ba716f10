"""The push worker: a durable outbox turned into Web Push (VAPID) deliveries."""
