"""Handlers for the psycopg-only worker test: the effect goes through message.connection."""
from relay import Message, handler


@handler("plain")
def record(message: Message) -> None:
    message.connection.execute(
        "INSERT INTO plain_effect (message_id, body) VALUES (%s, %s)", [message.message_id, message.text()]
    )
