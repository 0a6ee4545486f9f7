"""The read-only models: reading through the ORM, raw() on the inbox, the admin, no writes."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client

import relay
import support
from relay_django.models import InboxMessage, OutboxMessage, ReadOnly


@pytest.mark.django_db(transaction=True)
def test_inbox_rows_by_their_two_column_key_and_through_raw(db_name: str) -> None:
    ids = [support.insert_inbox(db_name, "models", f"k{i}", b"{}", sequence=i) for i in range(3)]
    other = support.insert_inbox(db_name, "models-other", "k0", b"{}")
    message = InboxMessage.objects.get(inbox="models", message_id=ids[1])
    assert (message.key, message.sequence, message.attempts, message.processed_at) == ("k1", 1, 0, None)
    assert message.pk == message.seq
    raw = list(InboxMessage.objects.raw("SELECT * FROM relay.inbox WHERE inbox = %s ORDER BY seq", ["models"]))
    assert [m.message_id for m in raw] == ids
    assert [m.message_id for m in InboxMessage.objects.filter(inbox="models-other")] == [other]


@pytest.mark.django_db
def test_the_models_refuse_every_write() -> None:
    with transaction.atomic():
        message_id = relay.enqueue(connection, support.unique("ro"), "k", b"x")
    row = OutboxMessage.objects.get(message_id=message_id)
    for write in (
        row.save, row.delete, OutboxMessage.objects.all().delete, lambda: OutboxMessage.objects.update(topic="t"),
        lambda: OutboxMessage.objects.create(topic="t"), lambda: InboxMessage.objects.bulk_create([]),
        lambda: InboxMessage.objects.filter(inbox="x").update(attempts=0),
    ):
        with pytest.raises(ReadOnly):
            write()
    assert OutboxMessage.objects.get(message_id=message_id).topic == row.topic


@pytest.mark.django_db
def test_the_admin_lists_both_tables_read_only(db_name: str) -> None:
    with transaction.atomic():
        relay.enqueue(connection, "admin-topic", "admin-key", b"x")
    admin = User.objects.create_superuser("ops", "ops@example.com", "pw")
    client = Client()
    client.force_login(admin)
    outbox = client.get("/admin/relay_django/outboxmessage/")
    assert outbox.status_code == 200 and b"admin-key" in outbox.content
    assert client.get("/admin/relay_django/inboxmessage/").status_code == 200
    assert client.get("/admin/relay_django/outboxmessage/add/").status_code == 403
