"""Ingest: RabbitMQ messages (``amqp``) become stored events (``ingestor``), in batches (``listener``).

The first step of the data flow: broker -> listener -> store.  ``replay`` and
``quarantine requeue`` go through the same ``ingestor``.
"""
