"""Relay outbox V6 (relay.enqueue without NOTIFY, so commits no longer queue behind the
notification lock and two-phase commit works), V7 (the operator audit trail and per-topic
leases), V8 (autovacuum settings for a long-lived outbox); inbox V9 (the operator audit trail)."""

from django.db import migrations

from relay_django.schema import installer

#: The Relay migration versions this migration brings (see relay_django.schema).
RELAY_VERSIONS = {"outbox": 8, "inbox": 9}


class Migration(migrations.Migration):
    dependencies = [("relay_django", "0003_bounded_locks_raw_headers_operator")]

    operations = [
        migrations.RunPython(installer(RELAY_VERSIONS), migrations.RunPython.noop, elidable=False),
    ]
