"""The origin side of the test project: an order saved with its message in one transaction."""
from django.db import models


class Order(models.Model):
    amount_cents = models.BigIntegerField()
