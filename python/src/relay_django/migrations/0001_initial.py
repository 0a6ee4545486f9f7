"""Relay's outbox (V1-V4) and inbox (V1-V5) schemas, and the read-only models' state."""

from django.db import migrations, models

from relay_django.schema import installer

#: The Relay migration versions this migration brings (see relay_django.schema).
RELAY_VERSIONS = {"outbox": 4, "inbox": 5}


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.RunPython(installer(RELAY_VERSIONS), migrations.RunPython.noop, elidable=False),
        migrations.CreateModel(
            name="OutboxMessage",
            fields=[
                ("id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("message_id", models.UUIDField(unique=True)),
                ("topic", models.TextField()),
                ("key", models.TextField()),
                ("msg_type", models.TextField()),
                ("content_type", models.TextField()),
                ("payload", models.BinaryField()),
                ("headers", models.JSONField()),
                ("traceparent", models.TextField(null=True)),
                ("tracestate", models.TextField(null=True)),
                ("created_at", models.DateTimeField()),
                ("published_at", models.DateTimeField(null=True)),
                ("kafka_partition", models.IntegerField(null=True)),
                ("kafka_offset", models.BigIntegerField(null=True)),
                ("parked_at", models.DateTimeField(null=True)),
                ("park_reason", models.TextField(null=True)),
                ("discarded_at", models.DateTimeField(null=True)),
                ("discard_reason", models.TextField(null=True)),
            ],
            options={
                "verbose_name": "outbox message",
                "db_table": '"relay"."outbox"',
                "ordering": ["id"],
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="InboxMessage",
            fields=[
                ("seq", models.BigIntegerField(primary_key=True, serialize=False)),
                ("inbox", models.TextField()),
                ("message_id", models.UUIDField()),
                ("source", models.TextField()),
                ("topic", models.TextField()),
                ("key", models.TextField()),
                ("msg_type", models.TextField()),
                ("content_type", models.TextField()),
                ("payload", models.BinaryField()),
                ("headers", models.JSONField()),
                ("traceparent", models.TextField(null=True)),
                ("tracestate", models.TextField(null=True)),
                ("sequence", models.BigIntegerField()),
                ("created_at", models.DateTimeField()),
                ("kafka_topic", models.TextField()),
                ("kafka_partition", models.IntegerField()),
                ("kafka_offset", models.BigIntegerField()),
                ("received_at", models.DateTimeField()),
                ("processed_at", models.DateTimeField(null=True)),
                ("skipped_at", models.DateTimeField(null=True)),
                ("attempts", models.IntegerField()),
                ("last_error", models.TextField(null=True)),
                ("next_attempt_at", models.DateTimeField(null=True)),
                ("parked_at", models.DateTimeField(null=True)),
                ("park_reason", models.TextField(null=True)),
            ],
            options={
                "verbose_name": "inbox message",
                "db_table": '"relay"."inbox"',
                "ordering": ["seq"],
                "managed": False,
                "unique_together": {("inbox", "message_id")},
            },
        ),
    ]
