"""quicksave.Checkpointer from Python: the handle's futures behave as concurrent.futures.Future
(result, done, exception, add_done_callback, wait/as_completed), errors arrive through them as
quicksave errors, cancel() and progress() work, options are validated, and close() waits."""

import concurrent.futures
import threading

import pytest
import torch

import quicksave


def state_dict(n=8, size=1024):
    return {f"w{i}": torch.full((size,), float(i)) for i in range(n)}


def test_futures_are_concurrent_futures(tmp_path):
    calls = []
    lock = threading.Lock()
    with quicksave.Checkpointer() as ckpt:
        handle = ckpt.save_async(state_dict(), tmp_path / "c")
        staged, committed = handle.staged(), handle.committed()
        assert isinstance(staged, concurrent.futures.Future) and isinstance(committed, concurrent.futures.Future)
        committed.add_done_callback(lambda f: calls.append(("committed", f.result())))
        staged.add_done_callback(lambda f: calls.append(("staged", f.result())))
        result = committed.result(timeout=None)
        done, not_done = concurrent.futures.wait([staged, committed])
        assert not not_done and staged.done() and committed.done()
        assert staged.result() is None and staged.exception() is None and committed.exception() is None
        assert not committed.cancel()  # Future.cancel() cannot stop a running save; handle.cancel() can
        assert list(concurrent.futures.as_completed([committed])) == [committed]
        late = []
        committed.add_done_callback(late.append)  # already done: called at once
        assert late == [committed]
        handle._join()  # returns once the completion thread has run the callbacks
    with lock:
        assert sorted(name for name, _ in calls) == ["committed", "staged"]
    assert isinstance(result, quicksave.SaveResult)
    assert result.files == ["model.safetensors"] and result.bytes_written > 8 * 4096
    assert repr(handle).endswith("committed>")
    back = quicksave.load_state_dict_from_file(tmp_path / "c" / "model.safetensors")
    assert all(torch.equal(back[k], v) for k, v in state_dict().items())


def test_progress_reaches_the_total(tmp_path):
    with quicksave.Checkpointer(pinned_budget_bytes="64KB", chunk_bytes=4096) as ckpt:
        handle = ckpt.save_async(state_dict(16, 4096), tmp_path / "c", max_shard_size="100KB")
        before = handle.progress()
        assert isinstance(before, quicksave.SaveProgress) and before.bytes_total > 16 * 4096 * 4
        assert before.bytes_staged <= before.bytes_total and before.bytes_written <= before.bytes_total
        handle.wait()
        after = handle.progress()
    assert after.bytes_staged == after.bytes_written == after.bytes_total == before.bytes_total


def test_io_error_arrives_through_both_futures(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with quicksave.Checkpointer() as ckpt:
        handle = ckpt.save_async(state_dict(), tmp_path / "file" / "c")
        error = handle.committed().exception()
        assert isinstance(error, quicksave.IoError) and isinstance(error, OSError)
        assert error.code == "io" and error.errno == 20  # ENOTDIR
        assert "Not a directory" in str(error)
        assert isinstance(handle.staged().exception(), quicksave.Error)
        with pytest.raises(quicksave.IoError):
            handle.committed().result()


def test_planning_errors_raise_at_once(tmp_path):
    with quicksave.Checkpointer() as ckpt:
        with pytest.raises(ValueError, match="Unit 'XB' not supported"):
            ckpt.save_async(state_dict(), tmp_path / "c", max_shard_size="5XB")
        with pytest.raises(ValueError, match="is a str, not a torch.Tensor"):
            ckpt.save_async({"a": torch.ones(1), "q": "nf4"}, tmp_path / "c")
        with pytest.raises(ValueError, match="safetensors only"):
            ckpt.save_async(state_dict(), tmp_path / "c", safe_serialization=False)
        with pytest.raises(ValueError, match="metadata value of 'bad'"):
            ckpt.save_async(state_dict(), tmp_path / "c", metadata={"bad": [1, 2]})
    assert not (tmp_path / "c").exists()


def test_cancel_leaves_the_previous_checkpoint(tmp_path):
    previous = {"w": torch.arange(10.0)}
    quicksave.save_torch_state_dict(previous, tmp_path / "c")
    big = {f"w{i}": torch.randn(256 * 1024) for i in range(16)}  # 16 MB through a 16 KB pool
    with quicksave.Checkpointer(pinned_budget_bytes="16KB", chunk_bytes=4096, max_in_flight_saves=1) as ckpt:
        first = ckpt.save_async(big, tmp_path / "c")
        queued = ckpt.save_async(big, tmp_path / "other")
        queued.cancel()
        first.cancel()
        outcomes = []
        for handle in (first, queued):
            error = handle.committed().exception()
            outcomes.append(error)
            # cancelled, or already published before cancel() reached it: never anything else
            assert error is None or isinstance(error, quicksave.CancelledError), error
            if error is not None:
                assert isinstance(error, concurrent.futures.CancelledError) and error.code == "cancelled"
    loaded = quicksave.load_state_dict_from_file(tmp_path / "c" / "model.safetensors")
    if outcomes[0] is None:
        assert sorted(loaded) == sorted(big)
    else:
        assert torch.equal(loaded["w"], previous["w"])  # the previous checkpoint is untouched
    if outcomes[1] is not None:
        assert not (tmp_path / "other").exists()


def test_when_busy_fail_refuses_beyond_the_limit(tmp_path):
    big = {f"w{i}": torch.randn(256 * 1024) for i in range(8)}
    with quicksave.Checkpointer(pinned_budget_bytes="16KB", chunk_bytes=4096, max_in_flight_saves=1,
                                when_busy="fail") as ckpt:
        first = ckpt.save_async(big, tmp_path / "a")
        try:
            second = ckpt.save_async(big, tmp_path / "b")
        except quicksave.ResourceExhaustedError as error:
            assert error.code == "resource_exhausted" and "max_in_flight_saves" in str(error)
            assert isinstance(error, RuntimeError)
        else:  # only when the first save had already ended: then the second runs normally
            assert second.wait().files == ["model.safetensors"]
        assert first.wait().files == ["model.safetensors"]


def test_options_and_close(tmp_path):
    ckpt = quicksave.Checkpointer(pinned_budget_bytes="1MB", chunk_bytes=8192, worker_threads=1, queue_depth=4,
                                  io_backend="posix", fsync=False, max_in_flight_saves=3, when_busy="fail")
    options = ckpt.options
    assert (options.pinned_budget_bytes, options.chunk_bytes, options.worker_threads, options.queue_depth) == (
        1_000_000, 8192, 1, 4)
    assert (options.io_backend, options.fsync, options.max_in_flight_saves, options.when_busy) == ("posix", False, 3, "fail")
    assert ckpt.backend_name == "posix" and ckpt.pinned_bytes <= 1_000_000
    assert ckpt.save(state_dict(), tmp_path / "c").files == ["model.safetensors"]
    ckpt.close()
    ckpt.close()  # idempotent
    assert ckpt.closed and "closed" in repr(ckpt)
    with pytest.raises(quicksave.FailedPreconditionError, match="closed"):
        ckpt.save_async(state_dict(), tmp_path / "d")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"chunk_bytes": 1000}, "chunk_bytes must be a positive multiple of 4096"),
        ({"pinned_budget_bytes": 4096, "chunk_bytes": 8192}, "must hold at least one chunk"),
        ({"io_backend": "fast"}, "io_backend must be 'auto', 'io_uring' or 'posix'"),
        ({"when_busy": "later"}, "when_busy must be 'wait' or 'fail'"),
        ({"pinned_budget_bytes": "-1MB"}, "must not be negative"),
        ({"worker_threads": -1}, "worker_threads must be a non-negative int"),
        ({"max_in_flight_saves": 0}, "max_in_flight_saves must be at least 1"),
    ],
)
def test_bad_options_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        quicksave.Checkpointer(**kwargs)
    assert isinstance(info.value, quicksave.InvalidArgumentError)


def test_from_env(monkeypatch):
    monkeypatch.setenv("QUICKSAVE_CHUNK_BYTES", "16384")
    monkeypatch.setenv("QUICKSAVE_IO_BACKEND", "posix")
    with quicksave.Checkpointer(from_env=True, queue_depth=2) as ckpt:
        assert ckpt.options.chunk_bytes == 16384 and ckpt.options.queue_depth == 2 and ckpt.backend_name == "posix"
    with quicksave.Checkpointer() as ckpt:  # the environment is read only when asked
        assert ckpt.options.chunk_bytes == 8 << 20


def test_saves_from_several_python_threads(tmp_path):
    with quicksave.Checkpointer(max_in_flight_saves=2) as ckpt:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            handles = list(pool.map(lambda i: ckpt.save_async({"w": torch.full((100,), float(i))}, tmp_path / f"c{i}"),
                                    range(8)))
        for handle in handles:
            handle.wait()
    for i in range(8):
        assert torch.equal(quicksave.load_state_dict_from_file(tmp_path / f"c{i}" / "model.safetensors")["w"],
                           torch.full((100,), float(i)))


def test_no_thread_per_save_and_callbacks_run_off_the_engine_threads(tmp_path):
    """The engine calls back on completion: saves in flight add no waiting threads, and the
    futures' callbacks run on quicksave's one completion thread, never on an engine thread."""
    ran_on = []
    lock = threading.Lock()

    def record(future):
        with lock:
            ran_on.append(threading.current_thread().name)

    with quicksave.Checkpointer(max_in_flight_saves=8) as ckpt:
        before = threading.active_count()
        handles = [ckpt.save_async(state_dict(), tmp_path / f"c{i}") for i in range(8)]
        threads_while_saving = threading.active_count()
        for h in handles:
            h.staged().add_done_callback(record)
            h.committed().add_done_callback(record)
        for h in handles:
            h.committed().result()
            h._join()
    assert threads_while_saving <= before + 1, (before, threads_while_saving)  # at most the completion thread
    assert not [t.name for t in threading.enumerate() if t.name.startswith("quicksave-save")]
    with lock:
        assert len(ran_on) == 16, ran_on
        # Already done when added: at once on this thread; otherwise on the completion thread.
        assert set(ran_on) <= {"quicksave-completions", threading.current_thread().name}, ran_on


def test_a_failed_save_completes_both_futures_through_the_callbacks(tmp_path):
    with quicksave.Checkpointer(pinned_budget_bytes=1 << 20, chunk_bytes=1 << 18) as ckpt:
        handle = ckpt.save_async(state_dict(n=16, size=256 * 1024), tmp_path / "c")
        handle.cancel()
        try:
            handle.committed().result(timeout=60)
        except quicksave.CancelledError:
            pass  # cancelled in time; otherwise it was already published, which cancel() allows
        assert handle.staged().done()
        handle._join()
        assert handle.done()


def test_the_cpp_library_logs_through_logging(tmp_path, caplog):
    # Each save's summary is logged at INFO by the C++ engine, on its own thread, and arrives in
    # logging.getLogger("quicksave").
    with caplog.at_level("INFO", logger="quicksave"):
        with quicksave.Checkpointer() as ckpt:
            ckpt.save_async(state_dict(), tmp_path / "c").committed().result()
    summaries = [r for r in caplog.records if r.name == "quicksave" and r.getMessage().startswith("saved ")]
    assert summaries, [r.getMessage() for r in caplog.records]
    assert summaries[0].levelname == "INFO" and str(tmp_path / "c") in summaries[0].getMessage()
    # Below the logger's level nothing is kept.
    caplog.clear()
    with caplog.at_level("WARNING", logger="quicksave"):
        with quicksave.Checkpointer() as ckpt:
            ckpt.save_async(state_dict(), tmp_path / "d").committed().result()
    assert not [r for r in caplog.records if r.name == "quicksave" and r.getMessage().startswith("saved ")]
