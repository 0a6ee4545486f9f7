"""The Django app configuration; checks the RELAY settings at start-up."""

from __future__ import annotations

from django.apps import AppConfig


class RelayConfig(AppConfig):
    name = "relay_django"
    label = "relay_django"
    verbose_name = "Relay"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .conf import relay_settings

        relay_settings()  # raises ImproperlyConfigured listing every problem
