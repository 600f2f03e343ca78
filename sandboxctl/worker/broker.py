"""A Redis transport and a Celery consumer that survive messages they cannot read.

Stock kombu decodes what BRPOP returns inside the worker's event loop, so a message that is not JSON,
or whose envelope lacks a field kombu needs, raises there and kills the worker ("Unrecoverable error:
JSONDecodeError"). Here each raw message is checked the way kombu will read it before kombu sees it;
one that fails goes to a dead-letter list in the broker (`sandboxctl.dead_letter`, newest first, the last
1,000 kept) and the run it names, if any, ends `sandbox_error` / `bad_message`. Messages with a readable
envelope whose body or task cannot be used are handled the same way by the consumer's own hooks.
"""

import base64
import json
import logging
import re
import time

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)

DEAD_LETTER_KEY = "sandboxctl.dead_letter"
DEAD_LETTER_KEEP = 1000
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def envelope_problem(channel, raw: bytes) -> str | None:
    """Why kombu could not turn `raw` into a message it can ack, or None when it can."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not JSON: {exc}"
    if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
        return "no properties"
    properties = payload["properties"]
    delivery = properties.get("delivery_info")
    if not isinstance(properties.get("delivery_tag"), str):
        return "no delivery tag"
    if not isinstance(delivery, dict) or not {"exchange", "routing_key"} <= delivery.keys():
        return "no delivery info"
    if not isinstance(payload.get("headers", {}), dict | None):
        return "headers are not an object"
    try:
        channel.Message(payload, channel=channel)
    except Exception as exc:  # noqa: BLE001 - whatever kombu would raise is what we must not let through
        return f"unreadable envelope: {exc.__class__.__name__}: {exc}"
    return None


def dead_letter(client, queue: str, raw: bytes, reason: str) -> None:
    """Keep the raw message aside with its reason, and end the runs it names."""
    log.error("dead-lettered a message from %s: %s (%d bytes)", queue, reason, len(raw))
    record = json.dumps({"queue": queue, "reason": reason, "at": time.time(), "raw": raw.decode("utf-8", "replace")})
    try:
        client.lpush(DEAD_LETTER_KEY, record)
        client.ltrim(DEAD_LETTER_KEY, 0, DEAD_LETTER_KEEP - 1)
    except Exception:  # noqa: BLE001 - losing the copy must not lose the worker
        log.exception("could not store the dead letter")
    end_runs_named_in(raw)


def end_runs_named_in(raw: bytes) -> None:
    """A queued run whose message was unreadable would wait for nothing: end it with the reason."""
    # kombu loads this transport while Django reads its settings, before the app registry exists: models later.
    from django.db import close_old_connections

    from providers.base import Status
    from sandboxctl.executions.models import Execution

    ids = named_ids(raw)
    if not ids:
        return
    try:
        for execution in Execution.objects.filter(pk__in=ids, status=Status.QUEUED):
            execution.end_with_error(
                Status.SANDBOX_ERROR, "bad_message", "the task message for this run could not be read"
            )
    except Exception:  # noqa: BLE001 - the reconciler ends it later if the database is away now
        log.exception("could not end the runs named in a dead letter")
    finally:
        close_old_connections()


def named_ids(raw: bytes) -> set[str]:
    """Execution ids in a raw message: in its text, or in its base64 body when the envelope is JSON."""
    texts = [raw]
    try:
        body = json.loads(raw).get("body")
        texts.append(base64.b64decode(body))
    except Exception:  # noqa: BLE001 - a message this broken names nothing more
        pass
    return {match.decode() for text in texts for match in UUID.findall(text.lower())}


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options):
        # kombu decodes the BRPOP reply inside its own method; check the reply on its way there.
        client = self.client
        parse = client.parse_response

        def parse_and_check(connection, command_name, **kwargs):
            reply = parse(connection, command_name, **kwargs)
            if command_name == "BRPOP" and reply:
                queue, raw = reply
                problem = envelope_problem(self, raw)
                if problem:
                    with self.conn_or_acquire() as other:
                        dead_letter(other, kombu_redis.bytes_to_str(queue), raw, problem)
                    return None  # kombu treats it as an empty poll
            return reply

        client.parse_response = parse_and_check
        try:
            return super()._brpop_read(**options)
        finally:
            del client.parse_response


    def _connparams(self, asynchronous=False):
        # A channel closed while the consumer reconnects may still be asked for a client (kombu's close() reads
        # a BRPOP still in flight); its transport has let go of the connection by then, and kombu's
        # `conninfo.hostname` raised AttributeError, which Celery treats as unrecoverable and exits the worker
        # (seen here with `kill -9` of Redis). Said as a connection error, the consumer just reconnects.
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed while reconnecting")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


class SocketTransport(Transport):
    """The same, for `socket:///path/to/redis.sock` URLs (the embedded broker): kombu then hands the whole URL
    to the channel, which connects to the unix socket it names."""

    can_parse_url = True


class Consumer(CeleryConsumer):
    """Celery's consumer, with unreadable bodies and unknown or invalid tasks dead-lettered, not just logged."""

    def _dead_letter(self, message, reason: str) -> None:
        raw = json.dumps(getattr(message, "_raw", None) or {"body": repr(message.body)}, default=repr).encode()
        queue = (message.delivery_info or {}).get("routing_key", "?")
        with self.app.connection_for_write() as connection:
            dead_letter(connection.default_channel.client, queue, raw, reason)

    def on_decode_error(self, message, exc):
        self._dead_letter(message, f"undecodable body: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body, message):
        self._dead_letter(message, "unknown message format")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body, message, exc):
        self._dead_letter(message, f"unknown task: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body, message, exc):
        self._dead_letter(message, f"invalid task: {exc}")
        super().on_invalid_task(body, message, exc)
