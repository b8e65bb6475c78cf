"""A vision-language model behind any OpenAI-compatible chat completions endpoint (OpenAI,
OpenRouter, Together, vLLM, a dreamloom server, ...), for models too large to run here
(``meta-llama/llama-4-maverick``).

Images travel inline as ``data:`` URLs, downscaled and re-encoded to stay under providers'
size limits. Rate limits (429), server errors (5xx) and dropped connections are retried a
bounded number of times with exponential backoff (honouring ``Retry-After``); every other
refusal is one clear line: a wrong key says "authentication failed", an unreachable
endpoint names its URL.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from dreamloom.vision.backends import Completion, GenerationOptions, TokenStream, VisionBackend, VisionError
from dreamloom.vision.images import REMOTE_MAX_SIDE
from dreamloom.vision.messages import Message, to_openai

#: Where the API key is read from, first found wins.
API_KEY_VARIABLES = ("DREAMLOOM_VISION_API_KEY", "OPENAI_API_KEY")
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout, httpx.RemoteProtocolError,
                 httpx.ReadError, httpx.WriteError)
#: Longest wait between two tries, whatever ``Retry-After`` asks.
_MAX_WAIT = 30.0


def api_key_from_env() -> str | None:
    return next((value for name in API_KEY_VARIABLES if (value := os.environ.get(name))), None)


def _provider_message(response: httpx.Response) -> str:
    """The provider's own words for an error response (OpenAI's ``error.message``, FastAPI's
    ``detail``), else the start of its body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return str(body)[:200]


class RemoteBackend(VisionBackend):
    """Chat completions at ``base_url`` (ending in ``/v1``, as OpenAI's clients take it) with
    model id ``model``. ``api_key`` defaults to ``$DREAMLOOM_VISION_API_KEY`` or ``$OPENAI_API_KEY``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, options: GenerationOptions | None = None,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 0.5, max_side: int = REMOTE_MAX_SIDE):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name = model
        self.api_key = api_key if api_key is not None else api_key_from_env()
        self.options = options or GenerationOptions()
        self.max_retries, self.backoff, self.max_side = max_retries, backoff, max_side
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), headers=headers)

    def _body(self, messages: list[Message], options: GenerationOptions, stream: bool) -> dict:
        body = {"model": self.name, "messages": to_openai(messages, self.max_side),
                "max_tokens": options.max_new_tokens, "temperature": options.temperature}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    def _wait(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.backoff * 2**attempt
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = float(retry_after)
        time.sleep(min(delay, _MAX_WAIT))

    def _refusal(self, response: httpx.Response) -> VisionError:
        message = _provider_message(response)
        if response.status_code in (401, 403):
            hint = "" if self.api_key else f" (no API key: set {' or '.join(API_KEY_VARIABLES)})"
            return VisionError(f"authentication failed at {self.url} (HTTP {response.status_code}): {message}{hint}")
        return VisionError(f"{self.url} refused the request (HTTP {response.status_code}): {message}")

    def _send(self, body: dict) -> httpx.Response:
        """The response to ``body`` once it is a success, after retrying what may pass; opened
        as a stream (the caller closes it) so server-sent events are read as they come."""
        attempt = 0
        while True:
            last = attempt >= self.max_retries
            try:
                response = self._client.send(self._client.build_request("POST", self.url, json=body), stream=True)
            except _RETRY_ERRORS as error:
                if last:
                    raise VisionError(f"cannot reach {self.url}: {type(error).__name__}: {error or 'no answer'} "
                                      f"(after {attempt + 1} tries)") from None
                response = None
            else:
                if response.status_code < 400:
                    return response
                response.read()
                response.close()
                if response.status_code not in _RETRY_STATUS or last:
                    raise self._refusal(response)
            self._wait(attempt, response)
            attempt += 1

    @contextmanager
    def _post(self, body: dict) -> Iterator[httpx.Response]:
        response = self._send(body)
        try:
            yield response
        except httpx.HTTPError as error:
            raise VisionError(f"{self.url} dropped the answer: {type(error).__name__}: {error}") from None
        finally:
            response.close()

    def complete(self, messages: list[Message], options: GenerationOptions | None = None) -> Completion:
        options = options or self.options
        with self._post(self._body(messages, options, stream=False)) as response:
            response.read()
            try:
                data = response.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise VisionError(f"{self.url} answered something other than a chat completion: "
                                  f"{response.text[:200]!r}") from None
        usage = data.get("usage") or {}
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return self._answered(Completion(text.strip(), usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0),
                                         finish))

    def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> TokenStream:
        options = options or self.options
        state: dict = {"usage": {}, "finish": "stop"}

        def pieces() -> Iterator[str]:
            with self._post(self._body(messages, options, stream=True)) as response:
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[len("data:"):].strip()
                    if payload == "[DONE]":
                        return
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise VisionError(f"{self.url} failed while answering: {chunk['error'].get('message')}")
                    state["usage"] = chunk.get("usage") or state["usage"]
                    for choice in chunk.get("choices") or []:
                        state["finish"] = "length" if choice.get("finish_reason") == "length" else state["finish"]
                        yield (choice.get("delta") or {}).get("content") or ""

        def finish(text: str) -> Completion:
            usage = state["usage"]
            return self._answered(Completion(text.strip(), usage.get("prompt_tokens", 0),
                                             usage.get("completion_tokens", 0), state["finish"]))

        return TokenStream(pieces(), finish)
