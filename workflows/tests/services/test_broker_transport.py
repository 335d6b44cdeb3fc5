"""promptpilot/common/broker.py: kombu's Redis transport with one synchronous client per channel."""
from __future__ import annotations

import pytest
import redis

from promptpilot.celery import app
from promptpilot.common.broker import Channel

pytestmark = pytest.mark.single_pass  # reaches no fast-statement branch


@pytest.fixture
def channel(broker_url):
    with app.connection_for_write() as connection:
        yield connection.default_channel


def test_the_redis_broker_uses_the_transport_that_keeps_one_client(channel):
    assert isinstance(channel, Channel)


def test_commands_of_a_channel_share_one_client_and_still_reach_redis(channel, broker_url):
    first = channel._create_client()
    assert channel._create_client() is first  # not a new redis.Redis (and its callback table) per command
    key = "promptpilot:test:broker-client"
    with channel.conn_or_acquire() as client:
        client.set(key, "ok")
    assert redis.Redis.from_url(broker_url).get(key) == b"ok"
    redis.Redis.from_url(broker_url).delete(key)


def test_a_new_connection_pool_gets_a_new_client(channel):
    first = channel._create_client()
    channel._pool = None  # what kombu does when it drops its pools after a connection error
    assert channel._create_client() is not first
    assert channel._create_client().connection_pool is channel.pool


def test_closing_a_channel_whose_connection_was_torn_down_is_a_connection_error_not_a_crash(broker_url):
    """Redis lost twice in a row: the worker closes a channel of a connection kombu already
    tore down while it holds unacked messages (steps in flight). Restoring them must fail
    as a connection error, which Celery ignores and reconnects after; an AttributeError
    (kombu reading the settings of a connection that is gone) stopped the worker for good."""
    from kombu import Queue

    queue = Queue("promptpilot-test-unacked", routing_key="promptpilot-test-unacked")
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        queue(channel).declare()
        connection.Producer(channel).publish({"step": 1}, routing_key=queue.routing_key, declare=[queue])
        delivered = queue(channel).get(no_ack=False)
        assert delivered is not None and channel.qos._delivered  # held unacked, as a step in flight

        channel._disconnect_pools()
        connection.transport.client = None  # what kombu leaves after the first loss (Connection._do_close_transport)
        connection.maybe_close_channel(channel)  # must not raise: Celery ignores only connection errors here

        assert channel.closed
    unacked = redis.Redis.from_url(broker_url).hget("unacked", delivered.delivery_tag)
    assert unacked is not None, "the message stays in the unacked set, for the visibility timeout to restore"
    redis.Redis.from_url(broker_url).delete("promptpilot-test-unacked", "unacked", "unacked_index")
