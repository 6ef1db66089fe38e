"""Bench baseline: what users would otherwise build.

An aiohttp server that appends each message with XADD to a Redis stream per
conversation (on a redis-server with ``appendonly yes``/``appendfsync
always``, started by the bench) and tails with XREVRANGE. Same JSON parse and
reply shape as fastpaca. Used only by ``bench/http_bench.py``.
"""

from __future__ import annotations

import sys

import orjson
import redis.asyncio as redis
from aiohttp import web

_REDIS = web.AppKey("redis", redis.Redis)


async def append(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    message = body["message"]
    if not isinstance(message.get("role"), str) or not isinstance(message.get("parts"), list):
        raise web.HTTPBadRequest()
    token_count = sum(len(p.get("text", "").encode()) for p in message["parts"]) // 4
    stream = f"conversation:{request.match_info['id']}"
    entry_id = await request.app[_REDIS].xadd(stream, {"m": orjson.dumps(message)})
    seq = int(entry_id.split(b"-")[0])
    reply = {"seq": seq, "version": seq, "token_count": token_count}
    return web.Response(status=201, body=orjson.dumps(reply), content_type="application/json")


async def tail(request: web.Request) -> web.Response:
    limit = int(request.query.get("limit", "100"))
    stream = f"conversation:{request.match_info['id']}"
    rows = await request.app[_REDIS].xrevrange(stream, count=limit)
    messages = [orjson.loads(fields[b"m"]) for _, fields in reversed(rows)]
    return web.Response(body=orjson.dumps({"messages": messages}), content_type="application/json")


async def put_conversation(request: web.Request) -> web.Response:
    return web.Response(status=201, body=b"{}", content_type="application/json")


def main() -> None:
    port, redis_port = int(sys.argv[1]), int(sys.argv[2])
    app = web.Application()

    async def connect(app: web.Application):  # type: ignore[no-untyped-def]
        app[_REDIS] = redis.Redis(host="127.0.0.1", port=redis_port, max_connections=64)
        yield
        await app[_REDIS].aclose()

    app.cleanup_ctx.append(connect)
    app.router.add_put("/v1/conversations/{id}", put_conversation)
    app.router.add_post("/v1/conversations/{id}/messages", append)
    app.router.add_get("/v1/conversations/{id}/tail", tail)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
