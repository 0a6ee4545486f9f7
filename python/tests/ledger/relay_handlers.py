"""The test project's handlers (found by relay_worker's autodiscovery of relay_handlers modules).

- inbox "e2e" and "retrying", msg_type payment.created: one ledger Entry per message; a payload
  with "fail": true writes its Entry and then raises, so the test sees the effect rolled back.
- inbox "slow": writes its Entry, leaves a marker file in RELAY_TEST_MARKERS, then takes
  RELAY_TEST_SLOW_SECONDS before it returns (for the SIGTERM test).
"""
import os
import pathlib
import time

from relay import Message, handler

from .models import Entry


class Declined(Exception):
    pass


def book(message: Message) -> None:
    body = message.json()
    Entry.objects.create(
        message_id=message.message_id, inbox=message.inbox, key=message.key, amount_cents=body["amount_cents"]
    )
    if body.get("fail"):
        raise Declined(f"account {message.key} declined {body['amount_cents']}")


handler("e2e", msg_type="payment.created")(book)
handler("retrying", msg_type="payment.created")(book)


@handler("slow")
def slowly(message: Message) -> None:
    Entry.objects.create(message_id=message.message_id, inbox=message.inbox, key=message.key, amount_cents=0)
    markers = pathlib.Path(os.environ["RELAY_TEST_MARKERS"])
    (markers / f"{message.message_id}.started").write_text(message.key)
    time.sleep(float(os.environ.get("RELAY_TEST_SLOW_SECONDS", "2")))
