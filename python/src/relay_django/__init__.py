"""Relay for Django: Relay's schema as migrations, read-only models, and ``manage.py relay_worker``.

Add ``"relay_django"`` to ``INSTALLED_APPS`` and run ``manage.py migrate``: the migrations install
(or upgrade) Relay's outbox and inbox schemas exactly as outbox-poller and inbox-consumer would,
so the services find nothing left to create. Settings: ``RELAY = {...}`` (see
:mod:`relay_django.conf`). Handlers: ``@relay.handler(...)`` in a ``relay_handlers`` module of any
installed app, run by ``manage.py relay_worker``.
"""
