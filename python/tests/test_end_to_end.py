"""End to end: Django enqueue -> outbox-poller -> broker -> inbox-consumer -> manage.py relay_worker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection, transaction

import relay
import support
from ledger.models import Entry
from orders.models import Order
from relay_django.models import InboxMessage, OutboxMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_rolled_back_enqueue_sends_nothing_and_a_committed_one_is_handled_exactly_once(
    db_name: str, services: dict[str, Any]
) -> None:
    topic = services["topic"]
    worker = support.manage("relay_worker", "--inbox", "e2e", "--workers", "2", database=db_name, name="relay_worker-e2e")
    try:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                order = Order.objects.create(amount_cents=999)
                rolled_back = relay.enqueue(
                    connection, topic, "acct-1", {"amount_cents": 999}, msg_type="payment.created"
                )
                raise RuntimeError("card declined")
        with transaction.atomic():
            order = Order.objects.create(amount_cents=1250)
            committed = relay.enqueue(
                connection, topic, "acct-1", {"amount_cents": 1250, "order": order.id},
                headers={"tenant": "acme"}, msg_type="payment.created",
            )
        procs = (services["poller"], services["consumer"], worker)
        support.eventually(
            90, "the committed message handled",
            lambda: InboxMessage.objects.filter(inbox="e2e", message_id=committed, processed_at__isnull=False).exists(),
            watch=procs,
        )
    finally:
        assert worker.terminate() == 0, worker.text()
    assert list(Entry.objects.filter(inbox="e2e").values_list("message_id", "amount_cents")) == [(committed, 1250)]
    assert not OutboxMessage.objects.filter(message_id=rolled_back).exists()
    assert OutboxMessage.objects.get(message_id=committed).published_at is not None
    stored = InboxMessage.objects.get(inbox="e2e", message_id=committed)
    assert (stored.source, stored.topic, stored.key, stored.headers) == ("django-it", topic, "acct-1", {"tenant": "acme"})
    assert json.loads(bytes(stored.payload)) == {"amount_cents": 1250, "order": order.id}
    assert list(InboxMessage.objects.filter(inbox="e2e").values_list("message_id", flat=True)) == [committed]
    assert Order.objects.count() == 1
