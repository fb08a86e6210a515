"""The bus layer: NATS and JetStream plumbing that every other layer stands on.

The connection and the JetStream layout (``connection``), the wire types and their encoding
(``messages``, ``codec``), the consumer wrapper and the life of a service process (``consumer``,
``service``), health, logs and traces, typed KV records, settings, and the embedded server.
It imports only ``qubus.errors``.
"""
