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
