"""Owns signal handling: SIGINT and SIGTERM end any run the way Ctrl-C does (`install_handlers`),
training stops after its step with a checkpoint (`StopSignals`), and an interrupted process
is sure to end (`exit_within`). Standard library only: main.py installs these before torch loads.
"""
from __future__ import annotations

import os
import signal
import threading


def exit_within(seconds: int) -> None:
    """After an interrupt the command must end: if the interpreter's shutdown hangs (a thread
    waiting on a lock), SIGALRM ends the process."""
    if hasattr(signal, "alarm"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(seconds)


def _terminate(signum, frame):
    exit_within(30)  # should the KeyboardInterrupt land inside a lock and the exit hang
    raise KeyboardInterrupt(f"signal {signum}")


def install_handlers() -> None:
    """SIGTERM (a scheduler's pre-emption, torchrun tearing down) and SIGINT end a
    run the way Ctrl-C does (training's loop installs its own handlers, which stop
    after the step and save a checkpoint: StopSignals below). SIGINT is
    re-armed because shells start background jobs with it ignored."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (e.g. called from a test runner's worker)
        pass


def _say(text: str) -> None:
    """Write to stderr from a signal handler: os.write takes no lock that the interrupted code may hold."""
    try:
        os.write(2, f"\n{text}\n".encode())
    except OSError:
        pass


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM while training. The handler only sets a flag, so no exception is
    raised inside a lock (a log handler's, tqdm's, tensorboard's) that would then hang the exit:

    - the first signal asks the loop to stop after the current step (all ranks at the same step),
      write a checkpoint and exit with 130;
    - another one while that checkpoint is being written waits for it (it says so);
    - another one before the write starts exits at once and says that no checkpoint was saved.

    Outside the main thread (no handlers can be installed there) it is inert."""

    def __init__(self):
        self.requested: int | None = None
        self.agreed = False  # every rank has heard of a signal (TrainRunner.after_step)
        self.saving = False
        self._old: dict = {}

    @property
    def name(self) -> str:
        return "interrupted" if self.requested is None else signal.Signals(self.requested).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested is None:
            self.requested = signum
            _say(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                 f"(send it again to exit at once without one)")
        elif self.saving:
            _say("a checkpoint is being written: exiting as soon as it is saved")
        else:
            _say(f"{signal.Signals(signum).name} again: exiting now; the checkpoint was NOT saved "
                 f"(checkpoint.pth, if any, is the last one saved before)")
            os._exit(130)
