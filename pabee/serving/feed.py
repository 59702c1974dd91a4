"""The engine's thread of a server: requests' examples wait in an inbox, join the exit engine's one
open stream (pabee/early_exit/engine.py's `served`) as they come, and each request is answered as
soon as its last example exits, whichever request the examples it shared calls with came from. With
request-level batching instead (the policy of Ray Serve's @serve.batch and of Triton's and
TorchServe's batchers), the inbox is taken a batch at a time (up to the batch size, or what came
within a short wait) and each batch runs to its end before the next: the rows its exits free stay
idle. Both answer with the Predictor's answers (predict.py's)."""

import collections
import logging
import threading
import time

logger = logging.getLogger(__name__)
WAKE = 0.2  # seconds the idle engine sleeps at most between looks at the inbox


class Refused(Exception):
    """A request the server will not answer: its HTTP status, one line, and seconds to retry after."""

    def __init__(self, status, line, retry_after=None):
        super().__init__(line)
        self.status, self.retry_after = status, retry_after


class Request:
    """One request's examples and answers, and the future its handler waits on (resolved from the
    engine's thread through `loop`)."""

    def __init__(self, texts, loop, future):
        self.texts, self.loop, self.future = texts, loop, future
        self.answers, self.left, self.arrived = [None] * len(texts), len(texts), time.monotonic()

    def resolve(self, value):
        if not self.loop.is_closed():  # a server stopped for good has no one left to answer
            self.loop.call_soon_threadsafe(lambda: self.future.done() or self.future.set_result(value))


class Feed:
    """The inbox and the engine's thread. `submit` queues a request (or refuses it at once past
    `max_queue` examples waiting); `close` lets the engine answer what was accepted, then stop."""

    def __init__(self, predictor, settings, metrics):
        self.predictor, self.settings, self.metrics = predictor, settings, metrics
        self.inbox, self.waiting, self.closing = collections.deque(), 0, False
        self.wake = threading.Condition()
        self.slots, self.next_position = {}, 0  # a feed position -> (request, index in it)
        self.in_batch = []  # request-level batching: the batch running
        self.failed = None  # the engine's error, once it failed
        # Examples in the engine at once at most (the stream's own bound): the rest wait in the inbox,
        # where --max_queue and --timeout see them.
        self.capacity = (predictor.model.config.num_hidden_layers + 1) * settings.batch_size
        self.thread = threading.Thread(target=self.run, name="pabee-engine", daemon=True)

    def start(self):
        self.thread.start()

    def submit(self, request):
        with self.wake:
            if self.failed:
                raise Refused(500, self.failed)
            if self.closing:
                raise Refused(503, "the server is shutting down: send it to another replica", 1)
            if self.waiting + len(request.texts) > self.settings.max_queue:
                raise Refused(429, f"{self.waiting} examples are waiting (--max_queue {self.settings.max_queue}): "
                                   "retry later", 1)
            self.inbox.append(request)
            self.waiting += len(request.texts)
            self.metrics.queue_depth.set(self.waiting)
            self.wake.notify()

    def close(self, grace):
        with self.wake:
            self.closing = True
            self.wake.notify()
        self.thread.join(grace)

    def taken(self, busy, most=None):
        """The requests in the inbox (at most `most` examples' worth), waiting up to WAKE for one when
        not `busy`; None once closing with the inbox empty. A request waiting longer than --timeout is
        refused instead (503), never answered late."""
        with self.wake:
            if not busy and not self.inbox and not self.closing:
                self.wake.wait(WAKE)
            if self.closing and not self.inbox:
                return None
            out = []
            while self.inbox and (most is None or not out or sum(len(r.texts) for r in out) + len(
                    self.inbox[0].texts) <= most):
                out.append(self.inbox.popleft())
                self.waiting -= len(out[-1].texts)
            self.metrics.queue_depth.set(self.waiting)
        now, started = time.monotonic(), []
        for request in out:
            self.metrics.queue_wait.observe(now - request.arrived)
            if now - request.arrived > self.settings.timeout:
                request.resolve(Refused(503, f"not started within --timeout {self.settings.timeout:g} s: the "
                                             "server is overloaded, retry later", 1))
            else:
                started.append(request)
        return started

    def arrivals(self, busy):
        """`served`'s feed: the waiting requests' examples, tokenized, each given its feed position, as
        long as the engine has room for them."""
        room = self.capacity - len(self.slots)
        if busy and room <= 0:
            return []
        requests = self.taken(busy, room)
        if requests is None:
            return None
        examples = []
        for request, tokenized in self.readable(requests):
            for i, example in enumerate(tokenized):
                self.slots[self.next_position] = (request, i)
                self.next_position += 1
                examples.append(example)
        return examples

    def readable(self, requests):
        """(request, its examples tokenized) of the requests the tokenizer reads; the others refused."""
        for request in requests:
            try:
                yield request, self.predictor.tokenized(request.texts)
            except Exception as e:  # the tokenizer refuses this request's texts: the others go on
                request.resolve(Refused(400, f"the tokenizer cannot read these texts ({type(e).__name__})"))

    def deliver(self, exited):
        """Each exited example's answer into its request; a request whose last example exited is
        answered now."""
        answers = self.predictor.answers(exited)
        self.counted(exited.launches, answers)
        for position, answer in zip(exited.ids.tolist(), answers, strict=True):
            request, i = self.slots.pop(position)
            request.answers[i], request.left = answer, request.left - 1
            if request.left == 0:
                request.resolve(request.answers)

    def counted(self, launches, answers):
        for launch in launches:
            self.metrics.rows.observe(launch.rows)
        for answer in answers:
            self.metrics.exits.labels(str(answer[2])).inc()

    def run(self):
        import torch

        from pabee.early_exit.engine import Shapes, served

        torch.set_num_threads(self.settings.threads)
        p = self.predictor
        try:
            with torch.inference_mode():
                if self.settings.batching == "request":
                    return self.run_batches(Shapes.of(p.shapes.batch_size, p.max_seq_length))
                for exited in served(p.model, p.rule, p.shapes, p.tokenizer.pad_token_id, self.arrivals, p.step):
                    self.deliver(exited)
        except Exception as e:  # the engine failed: every request waiting or in flight is told, none hangs
            logger.exception("the engine failed; the server answers 500 from now on")
            self.fail_all(e)

    def run_batches(self, shapes):
        """Request-level batching: a batch gathered (the batch size, or what came within
        --batch_wait of its first example), run to its end, its requests answered, then the next."""
        from pabee.early_exit.engine import stream

        p = self.predictor
        while (batch := self.gathered()) is not None:
            readable = list(self.readable(batch))
            self.in_batch = batch = [request for request, _ in readable]
            if not batch:
                continue
            examples = [example for _, tokenized in readable for example in tokenized]
            answers = []
            for answered in stream(p.model, p.rule, [examples], shapes, p.tokenizer.pad_token_id, p.step):
                answers += p.answers(answered)
                self.counted(answered.launches, answers[-len(answered.logits):])
            for request in batch:
                request.resolve(answers[:len(request.texts)])
                answers = answers[len(request.texts):]

    def gathered(self):
        batch = self.taken(False, self.settings.batch_size)
        if batch is None or not batch:
            return batch if batch is None else []
        deadline = time.monotonic() + self.settings.batch_wait
        while sum(len(r.texts) for r in batch) < self.settings.batch_size and time.monotonic() < deadline:
            more = self.taken(True, self.settings.batch_size - sum(len(r.texts) for r in batch))
            if not more:
                time.sleep(0.0005)
            batch += more or []
        return batch

    def fail_all(self, error):
        self.failed = f"the engine failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        with self.wake:
            self.closing = True
            waiting, self.inbox = list(self.inbox), collections.deque()
        in_flight = {id(request): request for request, _ in self.slots.values()}
        for request in [*in_flight.values(), *self.in_batch, *waiting]:
            request.resolve(Refused(500, self.failed))
