"""kombu's Redis transport with one synchronous client per channel.

kombu builds a new ``redis.Redis`` object for every synchronous command a channel sends
(each acknowledgement, each unacked-index update, each publish); redis-py fills a fresh
table of response callbacks for each one. In a worker running a hundred step attempts at
once that was a third of the process's CPU (bench/README.md, "Runtime"). A Redis client
object is thread-safe and holds no connection of its own (every command takes one from
the pool), so one per channel and pool serves them all. The asynchronous client (BRPOP)
is kombu's own, cached already.

It also keeps a worker alive when Redis goes away twice in a row (restarted again while
the worker was still reconnecting): see ``Channel._connparams``.
"""
from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False):
        if self.connection.client is None:
            # NOTE: this channel's connection was torn down already (Redis went away again
            # while the worker reconnected) and the channel is being closed with unacked
            # messages to restore. kombu would read the settings of the missing connection
            # (AttributeError, which Celery treats as unrecoverable: the worker exits); a
            # connection error is what Celery ignores here before reconnecting. The messages
            # stay in Redis's unacked set for the visibility timeout, and the reaper
            # re-sends from the database whatever is still due.
            raise redis.exceptions.ConnectionError("This broker channel's connection is already closed.")
        return super()._connparams(asynchronous=asynchronous)

    def _create_client(self, asynchronous: bool = False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self.__dict__.get("_promptpilot_sync_client")
        if client is None or client.connection_pool is not self.pool:  # a new pool after a reconnect
            client = self.__dict__["_promptpilot_sync_client"] = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
