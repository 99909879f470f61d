"""The asynchronous save engine for Python: Checkpointer.save_async() returns at once with a
SaveHandle whose staged() and committed() are concurrent.futures.Future objects.

    ckpt = quicksave.Checkpointer(pinned_budget_bytes="2GB")
    handle = ckpt.save_async(model.state_dict(), f"ckpt/step-{step}")
    ...forward, backward...
    handle.staged().result()      # every byte copied out: the optimizer may change the weights
    optimizer.step()
    handle.committed().result()   # durable and published, or the save's error raised

No thread waits per save: the engine calls back when a save is staged and when it is committed
(SaveHandle.when_staged/when_committed in C++), and that callback only queues the handle for
_Completions, one thread per process that completes the futures and so runs their callbacks (user
code never runs on the engine's threads, which must not block). The copying and writing run on
the engine's own threads. At exit, quicksave's atexit hook closes every Checkpointer, which waits
for the saves in flight, so the interpreter does not exit with a save half-written.
"""

import concurrent.futures
import queue
import sys
import threading
import weakref
from typing import Any, Dict, List, Optional, Union

from . import _quicksave as _C
from ._hf import MAX_SHARD_SIZE, _native_path, _save_args


def _running_future() -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    # The save is under way: Future.cancel() cannot stop it (SaveHandle.cancel() does).
    future.set_running_or_notify_cancel()
    return future


class _Completions:
    """The one thread that completes the futures of every save. The engine's completion callbacks
    (on its own threads, with the GIL taken) only put work here. A daemon: the interpreter's
    atexit hook, not this thread, keeps it alive until the saves finish; started on first use and
    again in a forked child, where the parent's thread does not exist."""

    def __init__(self) -> None:
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def post(self, work) -> None:
        self._queue.put(work)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="quicksave-completions", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            try:
                work()
            except BaseException:  # a bug here must not stop the other saves' completions
                sys.excepthook(*sys.exc_info())
            del work


_completions = _Completions()


class SaveHandle:
    """One asynchronous save. staged() and committed() are concurrent.futures.Future objects
    (result(timeout), done(), exception(), add_done_callback(), usable with
    concurrent.futures.wait/as_completed). committed().result() is a SaveResult."""

    def __init__(self, native: "_C._SaveHandle", directory: str):
        self._native: Optional["_C._SaveHandle"] = native
        self._final_progress: Optional["_C.SaveProgress"] = None
        self.directory = directory
        self._staged = _running_future()
        self._committed = _running_future()
        self._completed = threading.Event()  # set once committed()'s callbacks have run
        # The engine holds these callbacks (and so this handle) until the save completes.
        native.when_staged(lambda: _completions.post(self._complete_staged))
        native.when_committed(lambda: _completions.post(self._complete_committed))

    def _complete_staged(self) -> None:
        native = self._native
        if native is None:  # already completed by _complete_committed (its event came first)
            return
        try:
            native.wait_staged(0)  # ready: returns at once, or raises the save's error
        except BaseException as error:  # delivered through the future, like any Future's
            self._staged.set_exception(error)
        else:
            self._staged.set_result(None)

    def _complete_committed(self) -> None:
        if not self._staged.done():  # the staged completion is queued first; never leave it open
            self._complete_staged()
        try:
            result = self._native.wait_committed(0)
        except BaseException as error:
            outcome = (None, error)
        else:
            outcome = (result, None)
        # The engine's job holds the state dict's tensors until it is dropped: keep only the
        # final progress so that a handle kept for its result does not keep the tensors alive.
        self._final_progress = self._native.progress()
        self._native = None
        try:
            if outcome[1] is not None:
                self._committed.set_exception(outcome[1])
            else:
                self._committed.set_result(outcome[0])
        finally:
            self._completed.set()

    def staged(self) -> concurrent.futures.Future:
        """Done when every source byte has been copied out of the tensors."""
        return self._staged

    def committed(self) -> concurrent.futures.Future:
        """Done when every file is durable and the checkpoint published; carries the SaveResult or
        the save's first error (quicksave.CancelledError after cancel())."""
        return self._committed

    def cancel(self) -> None:
        """Stops the save as soon as possible; the previous checkpoint stays untouched unless this
        one was already published."""
        native = self._native
        if native is not None:
            native.cancel()

    def progress(self) -> "_C.SaveProgress":
        """bytes_staged, bytes_written and bytes_total so far."""
        native = self._native
        return native.progress() if native is not None else self._final_progress

    def done(self) -> bool:
        return self._committed.done()

    def wait(self, timeout: Optional[float] = None):
        """committed().result(timeout)."""
        return self._committed.result(timeout)

    def _join(self) -> None:
        """Returns once the save is committed or failed and the futures' callbacks have run."""
        self._completed.wait()

    def __repr__(self) -> str:
        state = "committed" if self._committed.done() else "staged" if self._staged.done() else "staging"
        return f"<quicksave.SaveHandle {self.directory!r} {state}>"


def _producer_streams(stream) -> List[tuple]:
    """(device index, cudaStream_t) of each torch.cuda.Stream in `stream` (None, one or a list)."""
    if stream is None:
        return []
    streams = list(stream) if isinstance(stream, (list, tuple)) else [stream]
    out = []
    for s in streams:
        device = getattr(s, "device", None)
        if getattr(s, "cuda_stream", None) is None or getattr(device, "type", None) != "cuda":
            raise _C.InvalidArgumentError(f"stream must be a torch.cuda.Stream (or a list of them), got {s!r}")
        out.append((device.index if device.index is not None else 0, int(s.cuda_stream)))
    devices = [d for d, _ in out]
    if len(set(devices)) != len(devices):
        raise _C.InvalidArgumentError(f"one stream per device, got several for cuda:{max(devices, key=devices.count)}")
    return out


_live_checkpointers: "weakref.WeakSet[Checkpointer]" = weakref.WeakSet()


class Checkpointer:
    """The asynchronous save engine: a bounded, reused pinned staging pool, background copy and
    write threads, and an atomic commit per save.

    Keyword options (None keeps the default, or the environment's with from_env=True):
    pinned_budget_bytes (int or "2GB"), chunk_bytes (a multiple of 4096), worker_threads,
    queue_depth, io_backend ("auto", "io_uring", "posix"), direct_io, fsync,
    max_in_flight_saves, when_busy ("wait" queues a save beyond the limit, "fail" refuses it).
    """

    def __init__(
        self,
        *,
        pinned_budget_bytes: Optional[Union[int, str]] = None,
        chunk_bytes: Optional[Union[int, str]] = None,
        worker_threads: Optional[int] = None,
        queue_depth: Optional[int] = None,
        io_backend: Optional[str] = None,
        direct_io: Optional[bool] = None,
        fsync: Optional[bool] = None,
        max_in_flight_saves: Optional[int] = None,
        when_busy: Optional[str] = None,
        from_env: bool = False,
    ):
        self._native = _C._Checkpointer(
            from_env=from_env,
            pinned_budget_bytes=pinned_budget_bytes,
            chunk_bytes=chunk_bytes,
            worker_threads=worker_threads,
            queue_depth=queue_depth,
            io_backend=io_backend,
            direct_io=direct_io,
            fsync=fsync,
            max_in_flight_saves=max_in_flight_saves,
            when_busy=when_busy,
        )
        self._handles: List[SaveHandle] = []
        self._lock = threading.Lock()
        _live_checkpointers.add(self)

    def save_async(
        self,
        state_dict: Dict[str, Any],
        save_directory,
        *,
        filename_pattern: Optional[str] = None,
        force_contiguous: bool = True,
        max_shard_size: Union[int, str] = MAX_SHARD_SIZE,
        metadata: Optional[Dict[str, Any]] = None,
        safe_serialization: bool = True,
        is_main_process: bool = True,
        shared_tensors_to_discard: Optional[List[str]] = None,
        stream=None,
    ) -> SaveHandle:
        """Starts saving `state_dict` into `save_directory` (save_torch_state_dict's options and
        files) and returns at once. Planning errors (bad size, pattern, dtype) raise here; I/O
        errors arrive through the handle's futures. The tensors must not change until staged().

        CUDA tensors are copied after the work queued so far on each device's current stream
        (torch.cuda.current_stream()); `stream` (a torch.cuda.Stream, or a list of them, one per
        device) names the stream that produces the weights instead."""
        if not safe_serialization:
            raise _C.InvalidArgumentError(
                "save_async writes safetensors only; use save_torch_state_dict(safe_serialization=False) for .bin files"
            )
        args = _save_args(filename_pattern, force_contiguous, max_shard_size, metadata, is_main_process, shared_tensors_to_discard)
        directory = str(save_directory)
        streams = _producer_streams(stream)
        handle = SaveHandle(self._native.save_async(state_dict, _native_path(directory), args, streams), directory)
        with self._lock:
            self._handles = [h for h in self._handles if not h.done()]
            self._handles.append(handle)
        return handle

    def save(self, state_dict: Dict[str, Any], save_directory, **options) -> "_C.SaveResult":
        """save_async(...).committed().result()."""
        return self.save_async(state_dict, save_directory, **options).committed().result()

    def close(self) -> None:
        """Waits for the saves in flight (they complete or fail, never half-written), then frees
        the engine. Idempotent."""
        self._native.close()
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle._join()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def backend_name(self) -> str:
        """The I/O backend writing the bytes ("io_uring" or "posix")."""
        return self._native.backend_name

    @property
    def backend_fallback_reason(self) -> str:
        """Why io_uring was not used when it was asked for (or automatic); empty otherwise."""
        return self._native.backend_fallback_reason

    @property
    def pinned_bytes(self) -> int:
        return self._native.pinned_bytes

    @property
    def options(self):
        return self._native.options

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<quicksave.Checkpointer closed>"
        return f"<quicksave.Checkpointer backend={self.backend_name} pinned_bytes={self.pinned_bytes}>"


def _close_all() -> None:
    for checkpointer in list(_live_checkpointers):
        checkpointer.close()
