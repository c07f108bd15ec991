"""Prepare the next batch while the step trains on this one: a loader thread, a side CUDA stream, events.

``data.loader=gpu`` (and ``pil_uint8``) turn a DataLoader batch into device tensors with work that
used to run on the training thread, between two steps: nvJPEG's batch decode, which waits on the
host for its own stream (``cudaStreamSynchronize`` in torchvision's ``decode_jpegs_cuda``), the
crops, and the host-to-device copies, queued on the compute stream. ``Ahead`` moves that work one
batch ahead: a background thread takes batch k+1 from the DataLoader and queues its decode, crops,
normalization and copies on a side stream while the training thread queues step k on its own. The
batch is handed over with a CUDA event: the consumer's stream waits for it on the device
(``wait_event``: the host does not wait), and every handed-over tensor is ``record_stream``-ed on
that stream, so the caching allocator does not give its memory to the next batch before the step
that reads it has run. The decode's host wait then blocks only the loader thread (torch releases the
GIL while an operator runs), and the training thread never waits for the device in the steady state.

Exactly one batch ahead: the thread starts batch k+1 when the trainer takes batch k, so at most two
prepared batches exist (the one in use, the next one). On a CPU the ``StreamHandoff`` methods do
nothing (CPU work is done when it returns), so the same scheduling runs, and is tested, without a GPU;
``feed`` enables the thread only for a CUDA device (on a CPU it would buy nothing and would let the
thread's crop draws interleave with the step's use of torch's global generator).
"""
from __future__ import annotations

import contextlib
import queue
import threading

import torch

_BATCH, _END, _ERROR = "batch", "end", "error"


class StreamHandoff:
    """The device side of the hand-over, behind four calls so the scheduling runs on a CPU too.

    CUDA: ``side()`` makes the loader thread's current stream a side stream; ``ready()`` records an
    event there once a batch's work is queued; ``receive(event, tensors)`` makes the consumer's
    current stream wait for it and records the tensors on that stream. CPU: all no-ops.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None

    def side(self):
        """Context for the loader thread (current streams are per thread)."""
        return torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()

    def ready(self):
        """A token for the work queued so far on the side stream (an event), None on a CPU."""
        if not self.cuda:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def receive(self, token, tensors) -> None:
        """On the consumer's thread: its stream waits for ``token`` (on the device, not the host), and
        the tensors, made on the side stream, are marked in use by it until its queued work has run."""
        if not self.cuda:
            return
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(token)
        for tensor in tensors:
            tensor.record_stream(stream)


def _tensors(batch):
    """The tensors of a prepared batch (a tuple or list of tensors)."""
    return [t for t in batch if isinstance(t, torch.Tensor)]


def _produce(source, work, handoff, out: queue.Queue, demand: threading.Semaphore, stop: threading.Event) -> None:
    """The loader thread: for each demanded batch, take it from ``source``, queue ``work`` on the
    side stream, and hand over (result, event). Errors (a bad file in a DataLoader worker, a decode
    failure) travel to the consumer, which raises them; the thread then ends."""
    try:
        with handoff.side():
            while True:
                demand.acquire()
                if stop.is_set():
                    return
                try:
                    batch = next(source)
                except StopIteration:
                    out.put((_END, None, None))
                    return
                result = work(batch)
                out.put((_BATCH, result, handoff.ready()))
    except BaseException as err:  # noqa: BLE001  (re-raised on the training thread, unchanged)
        out.put((_ERROR, err, None))


class Ahead:
    """Iterator over ``work(batch)`` for the batches of ``source``, prepared one batch ahead on a
    loader thread and handed over through ``handoff`` (see the module docstring)."""

    def __init__(self, source, work, handoff: StreamHandoff):
        self.handoff = handoff
        self._out: queue.Queue = queue.Queue()
        self._demand = threading.Semaphore(0)
        self._stop = threading.Event()
        self._done = False
        # the thread holds the DataLoader iterator, not this object, so dropping this object closes it
        self._thread = threading.Thread(target=_produce, name="gnrepro-loader", daemon=True,
                                        args=(source, work, handoff, self._out, self._demand, self._stop))
        self._demand.release()  # batch 0
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        kind, result, token = self._out.get()
        if kind != _BATCH:
            self._done = True
            self._thread.join()
            if kind == _ERROR:
                raise result
            raise StopIteration
        self._demand.release()  # the thread starts the next batch now, while the caller's step runs
        self.handoff.receive(token, _tensors(result))
        return result

    def close(self) -> None:
        """Stop the thread after the batch it is preparing (a loop left early, an error in the step)."""
        if not self._done:
            self._done = True
            self._stop.set()
            self._demand.release()
            self._thread.join(timeout=60)

    def __del__(self):
        self.close()
