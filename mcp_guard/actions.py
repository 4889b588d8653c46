"""The contract between the relay and an interceptor: what the relay asks, what it can be told to do.

The relay (relay.py) moves lines and knows no policy; an interceptor (guard.py is one) sees each message
and answers with one of these actions. Neither imports the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import wire


@dataclass(slots=True)
class Forward:
    """Pass the message on. For a client request, `watch` (anything but None) asks to see its answer:
    the relay hands it back to `Interceptor.upstream_answer`. `replacement` sends other bytes instead."""

    watch: Any = None
    replacement: bytes | None = None


@dataclass(slots=True)
class Reply:
    """Do not forward; answer the sender with these bytes (a whole JSON-RPC message)."""

    answer: bytes


@dataclass(slots=True)
class Drop:
    """Do not forward and do not answer (notifications, which have no answer)."""

    reason: str


class ClientChannel(Protocol):
    """What a deferred decision (and anything else of mcp-guard's own, such as a policy reload) may
    say to the client itself. Lines sent through it never reach the upstream, and answers to its
    requests are consumed, never forwarded. Call from the event loop's thread only."""

    async def request(self, method: str, params: dict[str, Any] | None,
                      timeout: float) -> wire.Message | None:
        """Send a request of mcp-guard's own (an id the upstream can never use) and wait for the
        client's answer: the answer, or None when none came within `timeout` seconds."""
        ...

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        """Send a notification of mcp-guard's own to the client."""
        ...


@dataclass(slots=True)
class Defer:
    """Decide later: the relay runs `decision(channel)` in its own task (the other messages keep
    flowing), where `channel` lets it ask the client something (a human's approval), and then applies
    the Forward or Reply it returns. Used when a human must be asked first, and for work
    too slow for the relay's pump (checking arguments against a schema).

    With `settle`, `decision` may return anything: the relay passes it to `settle`, which returns the
    Forward or Reply (or another Defer: the id stays reserved, and the relay waits again). `decision`
    runs on the event loop's thread; `settle` runs on the pump's thread, like every other interceptor
    call, and settles are applied in the order their decisions returned (the hand-over follows the
    return with no await in between). `settle` is not called when the request is no longer wanted (the
    client cancelled it, the session is ending), so slow and pure work belongs in `decision`, and what
    changes the interceptor's state in `settle`. The relay always runs `decision`, cancelled at once when
    the request is no longer wanted, so its own cleanup always happens."""

    decision: Callable[[ClientChannel], Awaitable[Any]]
    settle: Callable[[Any], ClientAction] | None = None


ClientAction = Forward | Reply | Drop | Defer


class Interceptor(Protocol):
    """Called by the relay's session core, always from one thread (the pump's), one call at a time,
    with no lock held: a call may read and change the interceptor's own state freely, log, and write
    its audit record (through writers that never block: a slow call holds up every message). It must
    not wait for the event loop (anyio.from_thread) or for the client: that is what Defer is for.
    `serve` and a Defer's `decision` run on the event loop's thread instead; what they share with the
    calls below must be handed over (a Defer's result reaches `settle` on the pump's thread)."""

    def client_request(self, msg: wire.Message) -> ClientAction: ...

    def client_notification(self, msg: wire.Message) -> Forward | Drop: ...

    def upstream_answer(self, msg: wire.Message, watch: Any) -> Forward | Reply: ...

    def upstream_answer_lost(self, watch: Any) -> None: ...

    def upstream_request(self, msg: wire.Message) -> None: ...

    # Optional: `async def serve(self, channel: ClientChannel) -> None`. When an interceptor has it, the
    # relay runs it as a task for the whole session (cancelled when the session ends): the place for
    # work of mcp-guard's own, such as watching the policy file and telling the client its tools changed.


class PassThrough:
    """The interceptor of a relay without a policy: everything passes."""

    def client_request(self, msg: wire.Message) -> ClientAction:
        return Forward()

    def client_notification(self, msg: wire.Message) -> Forward | Drop:
        return Forward()

    def upstream_answer(self, msg: wire.Message, watch: Any) -> Forward | Reply:
        return Forward()

    def upstream_answer_lost(self, watch: Any) -> None:
        return None

    def upstream_request(self, msg: wire.Message) -> None:
        return None
