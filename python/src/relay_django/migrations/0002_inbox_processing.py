"""Relay inbox V6: processing (relay.processing, relay.claim/done/failed, the worker's columns)."""

from django.db import migrations

from relay_django.schema import installer

#: The Relay migration versions this migration brings (see relay_django.schema).
RELAY_VERSIONS = {"outbox": 4, "inbox": 6}


class Migration(migrations.Migration):
    dependencies = [("relay_django", "0001_initial")]

    operations = [
        migrations.RunPython(installer(RELAY_VERSIONS), migrations.RunPython.noop, elidable=False),
    ]
