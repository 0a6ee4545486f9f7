"""Relay outbox V9: relay.enqueue checks the topic without a bounded regular expression and no
longer asks for V1's per-key locks (it waits once, here, for any writer still holding one), so the
writer's commit pays less for it."""

from django.db import migrations

from relay_django.schema import installer

#: The Relay migration versions this migration brings (see relay_django.schema).
RELAY_VERSIONS = {"outbox": 9, "inbox": 9}


class Migration(migrations.Migration):
    dependencies = [("relay_django", "0004_enqueue_without_notify_audit_topic_leases")]

    operations = [
        migrations.RunPython(installer(RELAY_VERSIONS), migrations.RunPython.noop, elidable=False),
    ]
