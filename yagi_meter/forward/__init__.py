"""Forwarding: which events go where (``routes``), the HTTP boundary to the AtomPub archive
(``atompub``) and the forwarder daemon (``forwarder``) that drains the store's forward outbox.
"""
