"""Ray Serve LLM's OpenAI app with an API key on every request, on either serving path. One switch: deploy
`api_key:build_openai_app` where you deployed `ray.serve.llm:build_openai_app` (the same arguments), and start Ray
with API_KEY in its environment and this folder on its Python path."""

import hmac
import json
import os

from ray.serve import llm
from ray.serve.llm.ingress import OpenAiIngress

UNAUTHORIZED = json.dumps({"error": {"message": "Missing or wrong API key", "type": "Unauthorized", "code": 401}})


class RequireApiKey:
    """ASGI middleware: every request needs `Authorization: Bearer <API_KEY>`, on every path. (Serve answers its own
    health checks, /-/healthz, before the app sees them.)"""

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


class ApiKeyIngress(OpenAiIngress):
    """The standard path's OpenAI ingress, its FastAPI app behind RequireApiKey. Serve calls this hook when the
    replica starts, before the app serves anything, and serves what it returns."""

    async def __serve_build_asgi_app__(self):
        self.app.add_middleware(RequireApiKey)  # added last, so it runs first: before CORS, routing and the docs
        return self.app


def build_openai_app(args: dict):
    """Ray Serve LLM's build_openai_app, with RequireApiKey in front of whichever app answers HTTP."""
    if not os.environ.get("API_KEY"):
        raise ValueError("API_KEY is not set where Ray builds the app: start Ray with API_KEY in its environment")
    args = llm.LLMServingArgs.model_validate(args)
    if not issubclass(OpenAiIngress, args.ingress_cls_config.ingress_cls):  # Ray's own, the default
        raise ValueError("api_key.build_openai_app sets the ingress class itself: leave ingress_cls_config out")
    if os.environ.get("RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING") == "1":
        # The LLM server replica answers HTTP with vLLM's own app, which loads the middleware itself.
        for llm_config in args.llm_configs:
            middleware = llm_config.engine_kwargs.setdefault("middleware", [])
            middleware.append("api_key.RequireApiKey")
    else:
        args.ingress_cls_config.ingress_cls = ApiKeyIngress  # the OpenAI ingress replica answers HTTP
    return llm.build_openai_app(args)
