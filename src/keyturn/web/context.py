"""What the use cases learn of the request: the device, never a token."""

from __future__ import annotations

from starlette.requests import Request

from keyturn.core.models import Device
from keyturn.service.context import RequestContext

MAX_USER_AGENT = 256


def request_context(request: Request) -> RequestContext:
    # The peer address, not X-Forwarded-For: a header anyone can set is no address.
    ip = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    if agent is not None:
        agent = agent[:MAX_USER_AGENT]
        if not agent.isprintable():  # the usual agent is kept as it is, without a scan
            agent = "".join(c for c in agent if c.isprintable())
    return RequestContext(device=Device(user_agent=agent, ip=ip))
