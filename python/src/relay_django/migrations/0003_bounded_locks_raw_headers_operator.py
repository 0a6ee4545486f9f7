"""Relay outbox V5 (bounded enqueue locks, leadership by lease) and inbox V7 (dead letters keep
their raw headers) and V8 (operator's skip reason and grants)."""

from django.db import migrations, models

from relay_django.schema import installer

#: The Relay migration versions this migration brings (see relay_django.schema).
RELAY_VERSIONS = {"outbox": 5, "inbox": 8}


class Migration(migrations.Migration):
    dependencies = [("relay_django", "0002_inbox_processing")]

    operations = [
        migrations.RunPython(installer(RELAY_VERSIONS), migrations.RunPython.noop, elidable=False),
        migrations.AddField(
            model_name="inboxmessage",
            name="skip_reason",
            field=models.TextField(null=True),
        ),
    ]
