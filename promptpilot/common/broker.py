"""kombu's Redis transport with one synchronous client per channel.

kombu builds a new ``redis.Redis`` object for every synchronous command a channel sends
(each acknowledgement, each unacked-index update, each publish); redis-py fills a fresh
table of response callbacks for each one. In a worker running a hundred step attempts at
once that was a third of the process's CPU (bench/README.md, "Runtime"). A Redis client
object is thread-safe and holds no connection of its own (every command takes one from
the pool), so one per channel and pool serves them all. The asynchronous client (BRPOP)
is kombu's own, cached already.
"""
from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _create_client(self, asynchronous: bool = False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self.__dict__.get("_promptpilot_sync_client")
        if client is None or client.connection_pool is not self.pool:  # a new pool after a reconnect
            client = self.__dict__["_promptpilot_sync_client"] = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
