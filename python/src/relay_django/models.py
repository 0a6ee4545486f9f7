"""Read-only Django models over ``relay.outbox`` and ``relay.inbox`` (unmanaged: Relay owns them).

Both are for reading, filtering and the admin. Writing goes through Relay only:
``relay.enqueue`` on the origin side, the inbox-consumer and ``relay.done``/``relay.failed``
(through the worker) on the receiving side; ``save()``, ``delete()`` and bulk writes raise
:class:`ReadOnly`.

The inbox's real key is two columns, ``(inbox, message_id)``. Django before 5.2 cannot declare a
composite primary key, and even 5.2's ``CompositePrimaryKey`` is not supported by the admin, so
:class:`InboxMessage` uses the ``seq`` identity column (unique, assigned at insert) as the ORM's
primary key on every supported Django (4.2 and later). ``pk`` is therefore ``seq``; look a
message up by its real key with ``InboxMessage.objects.get(inbox=..., message_id=...)``.
``raw()`` works as long as the query selects ``seq`` (``SELECT * FROM relay.inbox ...`` does).
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models

from relay.errors import RelayError


class ReadOnly(RelayError):
    """A write through a Relay model: Relay's tables are written by Relay only."""


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise ReadOnly(
        "Relay's tables are read-only from Django: send with relay.enqueue, and let the worker "
        "record outcomes (relay.done / relay.failed)"
    )


class ReadOnlyQuerySet(models.QuerySet):  # type: ignore[type-arg]
    """A queryset whose writing methods raise :class:`ReadOnly`."""

    update = _refuse  # type: ignore[assignment]
    delete = _refuse  # type: ignore[assignment]
    create = _refuse  # type: ignore[assignment]
    get_or_create = _refuse  # type: ignore[assignment]
    update_or_create = _refuse  # type: ignore[assignment]
    bulk_create = _refuse  # type: ignore[assignment]
    bulk_update = _refuse  # type: ignore[assignment]


class ReadOnlyModel(models.Model):
    objects = ReadOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        _refuse()

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        _refuse()


class OutboxMessage(ReadOnlyModel):
    """A row of ``relay.outbox``: a message enqueued on the origin side."""

    id = models.BigIntegerField(primary_key=True)
    message_id = models.UUIDField(unique=True)
    topic = models.TextField()
    key = models.TextField()
    msg_type = models.TextField()
    content_type = models.TextField()
    payload = models.BinaryField()
    headers = models.JSONField()
    traceparent = models.TextField(null=True)
    tracestate = models.TextField(null=True)
    created_at = models.DateTimeField()
    published_at = models.DateTimeField(null=True)
    kafka_partition = models.IntegerField(null=True)
    kafka_offset = models.BigIntegerField(null=True)
    parked_at = models.DateTimeField(null=True)
    park_reason = models.TextField(null=True)
    discarded_at = models.DateTimeField(null=True)
    discard_reason = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = '"relay"."outbox"'
        ordering = ["id"]
        verbose_name = "outbox message"

    def __str__(self) -> str:
        return f"{self.topic}/{self.key} {self.message_id}"


class InboxMessage(ReadOnlyModel):
    """A row of ``relay.inbox``: a message stored once per inbox. ``pk`` is ``seq`` (see above)."""

    seq = models.BigIntegerField(primary_key=True)
    inbox = models.TextField()
    message_id = models.UUIDField()
    source = models.TextField()
    topic = models.TextField()
    key = models.TextField()
    msg_type = models.TextField()
    content_type = models.TextField()
    payload = models.BinaryField()
    headers = models.JSONField()
    traceparent = models.TextField(null=True)
    tracestate = models.TextField(null=True)
    sequence = models.BigIntegerField()
    created_at = models.DateTimeField()
    kafka_topic = models.TextField()
    kafka_partition = models.IntegerField()
    kafka_offset = models.BigIntegerField()
    received_at = models.DateTimeField()
    # Processing (inbox migration V6): set by relay.done / relay.failed and the operator.
    processed_at = models.DateTimeField(null=True)
    skipped_at = models.DateTimeField(null=True)
    attempts = models.IntegerField()
    last_error = models.TextField(null=True)
    next_attempt_at = models.DateTimeField(null=True)
    parked_at = models.DateTimeField(null=True)
    park_reason = models.TextField(null=True)
    # Why an operator skipped it (inbox migration V8; `relay-admin processing skip --reason`).
    skip_reason = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = '"relay"."inbox"'
        ordering = ["seq"]
        unique_together = [("inbox", "message_id")]
        verbose_name = "inbox message"

    def __str__(self) -> str:
        return f"{self.inbox}: {self.topic}/{self.key} {self.message_id}"
