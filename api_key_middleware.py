import hmac
import json
import os

UNAUTHORIZED = json.dumps({"error": {"message": "Missing or wrong API key", "type": "Unauthorized", "code": 401}})


class RequireApiKey:
    """Middleware for vLLM's server (engine_kwargs: middleware): every request needs `Authorization: Bearer
    <API_KEY>`, on every path. (Serve answers its own health checks, /-/healthz, before vLLM sees them.)"""

    def __init__(self, app):
        self.app = app
        # The key comes from the environment of the Ray cluster, never from a config file.
        self.expected = f"Bearer {os.environ['API_KEY']}".encode()

    async def __call__(self, scope, receive, send):
        sent = next((value for name, value in scope.get("headers", []) if name == b"authorization"), b"")
        if scope["type"] == "lifespan" or hmac.compare_digest(sent, self.expected):  # constant time: no timing guess
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})  # refused before the handshake: HTTP 403
        body = UNAUTHORIZED.encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
