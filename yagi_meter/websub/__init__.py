"""WebSub: topics (``topics``), deliveries (``delivery``), the HTTP boundary to subscribers
(``callbacks``) and the push daemon (``push``) that drains the store's push outbox.

The hub's HTTP endpoint is the web app's (``feeds.hub``); everything it shares
with the push daemon lives here.
"""
