"""The transport seam for provider tests: an ``httpx.MockTransport`` handler that answers
from a queue of canned responses and keeps every request for the test to assert on."""

from __future__ import annotations

import json
from typing import Any

import httpx

from providers.base import BaseModel
from providers.registry import get_provider_class


class Recorder:
    """A MockTransport handler that answers from a queue and keeps every request."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.responses.pop(0)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)

    @property
    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def provider(model_type: str, factory: str, recorder: Recorder, model: str = "test-model", **kwargs: Any) -> Any:
    """The registered provider class for (type, factory), speaking through ``recorder``."""
    cls: type[BaseModel] = get_provider_class(model_type, factory)
    return cls(model, client=recorder.client, **kwargs)


def sse(*events: dict[str, Any] | str, event_names: list[str] | None = None) -> bytes:
    """A server-sent-events body: one ``data:`` line per event (with ``event:`` lines if named)."""
    out = []
    for i, e in enumerate(events):
        head = f"event: {event_names[i]}\n" if event_names else ""
        out.append(f"{head}data: {e if isinstance(e, str) else json.dumps(e)}\n\n")
    return "".join(out).encode()
