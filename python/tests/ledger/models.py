"""The receiving side of the test project: the business effect of each handled message."""
from django.db import models


class Entry(models.Model):
    # Deliberately not unique: the tests count entries per message to prove "exactly once".
    message_id = models.UUIDField()
    inbox = models.TextField()
    key = models.TextField()
    amount_cents = models.BigIntegerField()
