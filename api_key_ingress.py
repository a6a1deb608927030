import hmac
import os

from fastapi import HTTPException, Request
from ray.serve.llm.ingress import OpenAiIngress


class ApiKeyIngress(OpenAiIngress):
    """Ray Serve LLM's OpenAI ingress, except that every request needs `Authorization: Bearer <API_KEY>`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The key comes from the environment of the Ray cluster, never from a config file.
        self._expected = f"Bearer {os.environ['API_KEY']}".encode()

    def _require_key(self, request: Request):
        sent = request.headers.get("authorization", "").encode() if request else b""
        if not hmac.compare_digest(sent, self._expected):  # constant time: the key can't be guessed by timing
            raise HTTPException(status_code=401, detail="Missing or wrong API key")

    # Every endpoint that reaches the model (chat, completions, embeddings, tokenize, …) goes through this
    # method of Ray 2.60's ingress with the HTTP request; the tests check that it still does.
    async def _get_response(self, *, raw_request=None, **kwargs):
        self._require_key(raw_request)
        async for response in super()._get_response(raw_request=raw_request, **kwargs):
            yield response

    async def models(self, request: Request):
        self._require_key(request)
        return await super().models()

    async def model_data(self, model: str, request: Request):
        self._require_key(request)
        return await super().model_data(model)
