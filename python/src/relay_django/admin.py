"""Read-only admin pages for Relay's outbox and inbox (registered when django.contrib.admin is)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import InboxMessage, OutboxMessage


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "topic", "key", "msg_type", "created_at", "published_at", "parked_at")
    list_filter = ("topic",)
    search_fields = ("key", "=message_id")


@admin.register(InboxMessage)
class InboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("seq", "inbox", "topic", "key", "msg_type", "received_at", "processed_at", "attempts", "parked_at")
    list_filter = ("inbox", "topic")
    search_fields = ("key", "=message_id")
