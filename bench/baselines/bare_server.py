"""Bench baseline: the ceiling of one Python process.

An aiohttp server with fastpaca's append and tail routes that does the same
JSON parse and reply as the real handler but stores nothing. Used only by
``bench/http_bench.py``.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web

_versions: dict[str, int] = {}


async def append(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    message = body["message"]
    if not isinstance(message.get("role"), str) or not isinstance(message.get("parts"), list):
        raise web.HTTPBadRequest()
    conversation_id = request.match_info["id"]
    version = _versions.get(conversation_id, 0) + 1
    _versions[conversation_id] = version
    token_count = sum(len(p.get("text", "").encode()) for p in message["parts"]) // 4
    reply = {"seq": version, "version": version, "token_count": token_count}
    return web.Response(status=201, body=orjson.dumps(reply), content_type="application/json")


async def tail(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps({"messages": []}), content_type="application/json")


async def put_conversation(request: web.Request) -> web.Response:
    return web.Response(status=201, body=b"{}", content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_put("/v1/conversations/{id}", put_conversation)
    app.router.add_post("/v1/conversations/{id}/messages", append)
    app.router.add_get("/v1/conversations/{id}/tail", tail)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
