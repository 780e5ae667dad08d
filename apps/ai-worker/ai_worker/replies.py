"""Publishing replies in batches: per gateway instance, what accumulated in a short window goes out
as one message.

A token used to cost two Redis round trips (EXISTS on its cancel key, then PUBLISH) and the gateway
one Pub/Sub message to parse. Here the replies bound for one instance wait at most `window_s` and go
out together, with the replies of every other answer bound for it, as one ReplyBatch on its batch
channel (schema: libs/ai-bridge/schema/protocol.schema.json):

- Order: one flusher per channel publishes one message at a time, so an answer's replies reach the
  gateway in the order they were produced.
- Cancel: before a batch goes out, one MGET reads the cancel keys of the answers with tokens in it;
  the tokens of a cancelled answer are dropped (never published after its cancel was seen) and its
  next token raises Cancelled, so an answer still stops within one token.
- Deadlines: a done or an error is never held for the window: it flushes its channel at once, and
  its answer waits for it (as a token's producer does only when its channel is backed up).
- Failure: a publish that fails or takes over `bound_s` fails the answers in it at their next reply.
- Rolling upgrades: a batch that reached no subscriber went to a gateway of the previous protocol
  (it reads only replyTo): the same replies are published singly on replyTo, and that channel gets
  single messages for a while before a batch is tried again. A lone reply always goes singly on
  replyTo, which every gateway reads.

The worker's Redis client is a single-node client: MGET over cancel keys of different hash slots
would not run on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from redis.asyncio import Redis

from . import protocol as p

# Most replies in one message; the rest go in the next, at once.
BATCH_MAX = 1_000
# Replies waiting on one channel beyond which a token's producer waits for the flush (Redis slow).
PENDING_MAX = 5_000
# After a batch reached nobody, how long a channel gets single messages before a batch is tried again.
SINGLE_RETRY_S = 10.0


class Cancelled(Exception):
    """The answer's cancel key was set: seen when its buffered token was about to be published."""


class PublishTimeout(Exception):
    """A publish took longer than its bound."""


class TokenTurns(Protocol):
    """The fault injector's count of published tokens (faults.py): crash_after_tokens counts these."""

    def token_published(self) -> None: ...

    def token_not_published(self) -> None: ...


class _NoTurns:
    def token_published(self) -> None:
        pass

    def token_not_published(self) -> None:
        pass


@dataclass(eq=False)
class AnswerReplies:
    """One answer's replies: handed to its channel in order; a cancel or a failure seen at a flush is
    raised at the answer's next token."""

    publisher: "ReplyPublisher"
    channel: "_Channel"
    message_id: str
    session_id: str
    # Tokens that reached Redis (the client got them, unless its gateway is gone).
    delivered: int = 0
    cancelled: bool = False
    failure: BaseException | None = None

    def check(self) -> None:
        """Raises what a flush found: the answer was cancelled, or its replies could not be published."""
        if self.cancelled:
            raise Cancelled()
        if self.failure is not None:
            raise self.failure

    async def token(self, seq: int, text: str) -> None:
        """Queues a token; returns at once unless the channel is backed up."""
        self.check()
        await self.publisher._add(self.channel, p.token_reply(self.message_id, self.session_id, seq, text), self, wait=False)

    async def end(self, reply: dict[str, Any]) -> None:
        """Publishes the done or error that ends the answer (and everything queued before it on its
        channel) now, and waits until it is published. A done of a cancelled answer goes out as its
        error `cancelled`: every answer ends on the wire with done or error."""
        await self.publisher._add(self.channel, reply, self, wait=True)


@dataclass(eq=False)
class _Item:
    reply: dict[str, Any]
    owner: AnswerReplies | None
    # Set when someone waits for this reply to be published (a done or error, or a backed-up token).
    done: asyncio.Future[None] | None = None


@dataclass(eq=False)
class _Channel:
    name: str
    batch_name: str
    items: list[_Item] = field(default_factory=list)
    first_at: float | None = None
    urgent: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    single_until: float = 0.0


class ReplyPublisher:
    """See the module docstring. `window_s` 0: no waiting, but replies produced in the same event-loop
    turn still go out together."""

    def __init__(
        self,
        redis: Redis,
        window_s: float,
        bound_s: float = 5.0,
        turns: TokenTurns | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._redis = redis
        self._window = max(0.0, window_s)
        self._bound = bound_s
        self._turns = turns or _NoTurns()
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        # Counters for the worker's metrics: messages published and replies in them.
        self.messages = 0
        self.replies = 0

    def answer(self, reply_to: str, message_id: str, session_id: str) -> AnswerReplies:
        ch = self._channels.get(reply_to)
        if ch is None:
            ch = self._channels[reply_to] = _Channel(reply_to, p.batch_channel(reply_to))
        return AnswerReplies(self, ch, message_id, session_id)

    async def drain(self, timeout_s: float) -> None:
        """Lets the flushers publish what they hold (bounded), then stops them."""
        tasks = [ch.task for ch in self._channels.values() if ch.task is not None]
        for ch in self._channels.values():
            ch.urgent = True
            ch.wake.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # ---- internals -----------------------------------------------------------------

    async def _add(self, ch: _Channel, reply: dict[str, Any], owner: AnswerReplies | None, wait: bool) -> None:
        terminal = reply["type"] != "token"
        wait = wait or len(ch.items) >= PENDING_MAX
        item = _Item(reply, owner, asyncio.get_running_loop().create_future() if wait else None)
        ch.items.append(item)
        if ch.first_at is None:
            ch.first_at = self._clock()
        if terminal or wait:
            ch.urgent = True
            ch.wake.set()
        if ch.task is None:
            ch.task = asyncio.create_task(self._flush_loop(ch), name=f"replies:{ch.name}")
        if item.done is not None:
            await item.done

    async def _flush_loop(self, ch: _Channel) -> None:
        try:
            while ch.items:
                if not ch.urgent and ch.first_at is not None:
                    delay = ch.first_at + self._window - self._clock()
                    if delay > 0:
                        try:
                            async with asyncio.timeout(delay):
                                await ch.wake.wait()
                        except TimeoutError:
                            pass
                batch = ch.items[:BATCH_MAX]
                del ch.items[:BATCH_MAX]
                ch.wake.clear()
                # What is left is overdue: it goes next, without waiting.
                ch.first_at = float("-inf") if ch.items else None
                ch.urgent = bool(ch.items) and any(i.done is not None for i in ch.items)
                try:
                    async with asyncio.timeout(self._bound):
                        await self._send(ch, batch)
                except asyncio.CancelledError:
                    for i in batch:
                        if i.done is not None and not i.done.done():
                            i.done.cancel()
                    raise
                except TimeoutError:
                    self._failed(batch, PublishTimeout(f"publishing replies took over {self._bound:g} s"))
                except Exception as e:  # noqa: BLE001 - handed to the answers, which report it
                    self._failed(batch, e)
                else:
                    for i in batch:
                        if i.done is not None and not i.done.done():
                            i.done.set_result(None)
        finally:
            ch.task = None
            # Cancelled at shutdown with replies left: whoever waits for them is told.
            for i in ch.items:
                if i.done is not None and not i.done.done():
                    i.done.cancel()

    def _failed(self, batch: list[_Item], err: BaseException) -> None:
        for i in batch:
            if i.owner is not None and i.owner.failure is None:
                i.owner.failure = err
            if i.reply["type"] == "token":
                self._turns.token_not_published()
            if i.done is not None and not i.done.done():
                i.done.set_exception(err)

    async def _send(self, ch: _Channel, batch: list[_Item]) -> None:
        # The cancel keys of the answers with tokens here, in one round trip.
        asking = list({i.owner.message_id: i.owner for i in batch if i.owner is not None and i.reply["type"] == "token" and not i.owner.cancelled}.values())
        if asking:
            marks = await self._redis.mget([p.cancel_key(o.message_id) for o in asking])
            for o, mark in zip(asking, marks):
                if mark is not None:
                    o.cancelled = True
        out: list[dict[str, Any]] = []
        tokens: list[AnswerReplies | None] = []
        for i in batch:
            o = i.owner
            if o is not None and o.cancelled:
                if i.reply["type"] == "token":
                    self._turns.token_not_published()
                    continue
                if i.reply["type"] == "done":
                    out.append(p.error_reply(o.message_id, o.session_id, "cancelled", "the question was cancelled"))
                    continue
            out.append(i.reply)
            if i.reply["type"] == "token":
                tokens.append(o)
        if not out:
            return
        now = self._clock()
        if len(out) == 1 or now < ch.single_until:
            await self._singly(ch, out)
        else:
            body = json.dumps(p.reply_batch(out), ensure_ascii=False, separators=(",", ":"))
            if await self._redis.publish(ch.batch_name, body) == 0:
                # Nobody reads batches there: a gateway of the previous protocol, or none at all.
                ch.single_until = now + SINGLE_RETRY_S
                await self._singly(ch, out)
            else:
                self.messages += 1
                self.replies += len(out)
        for o in tokens:
            if o is not None:
                o.delivered += 1
            self._turns.token_published()

    async def _singly(self, ch: _Channel, out: list[dict[str, Any]]) -> None:
        if len(out) == 1:
            await self._redis.publish(ch.name, json.dumps(out[0], ensure_ascii=False, separators=(",", ":")))
        else:
            pipe = self._redis.pipeline(transaction=False)
            for r in out:
                pipe.publish(ch.name, json.dumps(r, ensure_ascii=False, separators=(",", ":")))
            await pipe.execute()
        self.messages += len(out)
        self.replies += len(out)
