"""What recording a run needs from DVC, done in a worker process while the run goes on.

Recording a run (`bertops.experiments.record`) commits the stages it reached to the DVC cache and
dvc.lock, as `dvc commit` does, and the flow compares the run with the one that made the
production model, read through DVC. Made at the end of the run, DVC's commit is most of what
recording costs (~1.1 s of DVC's own Python on the smoke run: every stage's params read and
hashed, the run-cache, dvc.lock rewritten; bench/RESULTS.md).

`RecordWorker` starts one process (`python -m bertops.record_worker ROOT`) when the run starts. It
imports DVC (~170 modules) and reads the production model's run at once, then commits each stage
the run submits once that stage has finished, while the next ones run; the end of the run waits
for the last stage's commit only. A process, not a thread: DVC is pure Python and would hold the
GIL against the flow's own work. It runs at a lower CPU priority, on what the run leaves idle.

Stages are submitted only by runs whose stages do not go through DVC (the direct executor):
`dvc repro` commits its own stages and holds DVC's repository lock while it does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bertops.experiments import Run, commit_stages, find_run

GATHER_S = 0.5  # how long the worker waits for more stages before a commit
REFUSED_GRACE_S = 5.0  # after a refused request, how long finish reads what the worker wrote before it went


class RecordWorker:
    """The client of one worker process. `champion()` is the production model's run (None: none, or
    unreadable here); `submit` the stages the run has reached as it goes (each is sent once, never
    waited for), then `finish` with all of them at the end. Use it as a context manager: leaving it
    stops the worker, after the commit it is making (dvc.lock is never left half written)."""

    def __init__(self, root: Path, champion: str | None):
        import bertops

        self._root = Path(root).resolve()  # the worker starts in it: a relative path would not do
        self._champion: Run | None = None
        self._sent: list[str] = []
        self._batches = 0  # commit requests sent
        self._replies: list[dict] = []  # commit replies, in order
        self._answered = champion is None  # the champion's reply came (or none was asked for)
        self._ended = False  # the worker's output closed: it exited or died
        self._refused = False  # a request could not be written: its input is closed (it is gone)
        self._changed = threading.Condition()
        self.committed: bool | None = None  # once finish() has run: every stage committed by the worker?
        self.problem: str | None = None  # why not, once finish() has returned False
        # the bertops this process runs, whatever the working directory holds (-P: no cwd on sys.path)
        path = [str(Path(bertops.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-P", "-m", "bertops.record_worker", str(self._root)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                cwd=self._root,
                process_group=0,  # signals to the terminal's group (Ctrl-C, hang-up) do not reach it
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))},
            )
        except OSError:  # no worker: champion() is None, finish() False (the caller commits)
            self._proc = None
            self._ended = True
            return
        threading.Thread(target=self._read, name="bertops-record-worker", daemon=True).start()
        if champion is not None:
            self._send({"op": "champion", "name": champion})

    def __enter__(self) -> RecordWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self) -> None:
        proc = self._proc
        assert proc and proc.stdout
        try:
            for line in proc.stdout:
                reply = json.loads(line)
                with self._changed:
                    if reply.get("op") == "champion":
                        self._answered = True
                        self._champion = _run(reply["run"]) if reply.get("run") else None
                    else:
                        self._replies.append(reply)
                    self._changed.notify_all()
        except Exception:  # noqa: BLE001 - an answer it cannot read: treated as a worker gone
            pass
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()
        proc.wait()  # reaped here: close() waits only for a commit in flight

    def _send(self, request: dict) -> bool:
        if self._ended or not self._proc or not self._proc.stdin:
            return False
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError:  # the worker is gone; finish() waits for its output to close, not for replies
            self._refused = True
            return False
        return True

    def champion(self, timeout: float = 120.0) -> Run | None:
        """The production model's run, once the worker has read it."""
        with self._changed:
            self._changed.wait_for(lambda: self._answered or self._ended, timeout)
            return self._champion

    def submit(self, stages: list[str], final: bool = False) -> None:
        """Have the worker commit those of `stages` not sent yet; returns at once. `final`: nothing
        will follow, so the worker starts at once instead of gathering stages that end soon after."""
        new = [stage for stage in stages if stage not in self._sent]
        if (new or final) and self._send({"op": "commit", "stages": new, "final": final}):
            self._sent.extend(new)
            self._batches += 1

    def finish(self, stages: list[str], timeout: float = 600.0) -> bool:
        """Commit what is left of `stages` and wait for every commit. True: the worker made them all;
        False: it did not (gone, silent for `timeout` s, or one of its commits failed), and the
        caller commits in its own process: a failure that passes (DVC's lock held a moment by
        another `dvc` command) is retried, and a refusal is reported there with DVC's message."""
        self.submit(stages, final=True)
        with self._changed:  # a refused request: the worker is gone; its last replies are read first
            limit = min(timeout, REFUSED_GRACE_S) if self._refused else timeout
            self._changed.wait_for(
                lambda: self._ended or (len(self._replies) >= self._batches and not self._refused), limit
            )
            replies, ended = list(self._replies), self._ended
        failed = [reply.get("error", "no reason given") for reply in replies if not reply.get("ok")]
        if failed:
            self.problem = f"its commit failed: {failed[0]}"
        elif len(replies) < self._batches or not set(stages) <= set(self._sent):
            if ended:
                self.problem = "the worker process ended early or never started"
            elif self._refused:  # its output is held open by another process: gone all the same
                self.problem = "its input closed before it was sent every stage"
            else:
                self.problem = f"no answer in {timeout:g} s"
        else:
            self.problem = None
        self.committed = self.problem is None
        return self.committed

    def close(self, wait: float = 600.0) -> None:
        """End the worker: its input closes and it exits once idle. A commit in flight is waited for
        up to `wait` s; after that the worker is left to finish it alone (it exits when done), never
        killed: DVC rewrites dvc.lock in place, and a kill could cut it half way."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with self._changed:
            busy = len(self._replies) < self._batches and not self._ended
            self._ended = True
        try:
            if proc.stdin:
                proc.stdin.close()
            if busy:
                proc.wait(wait)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _run(data: dict) -> Run:
    curves = {name: [(int(step), float(value)) for step, value in points] for name, points in data["curves"].items()}
    return Run(**{**data, "curves": curves})


def _work(root: Path, replies) -> None:
    """The worker: one JSON line in per request, one out per request, in order, until its input
    closes. {"op": "champion", "name": N} -> {"op": "champion", "run": Run as a dict or null};
    {"op": "commit", "stages": [...]} -> {"op": "commit", "ok": true, "pass": n} or {..., "ok": false,
    "error": ...}, n counting the commit passes made.
    Commit requests that come within GATHER_S of each other (package, then the short promote) are
    made in one pass: one dvc.lock rewrite, ~0.35 s, instead of one each; a final request (the end
    of the run, which waits) is not held back."""
    import gc
    import queue

    from dvc.repo import Repo

    gc.disable()  # collected between batches instead (below); see experiments._gc_paused
    requests: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                requests.put(json.loads(line))
        finally:  # end of input, or a line it cannot read: the worker ends after what it holds
            requests.put({"op": "end"})

    threading.Thread(target=read, name="requests", daemon=True).start()
    sources: bool | None = None
    passes = 0  # commit passes made; each reply says which one answered it
    held: list[dict] = []  # a request taken off the queue while merging: the next one
    while (request := held.pop() if held else requests.get())["op"] != "end":
        if request["op"] == "champion":
            try:
                run = dataclasses.asdict(find_run(root, request["name"]))
            except Exception:  # noqa: BLE001 - not recorded here, or unreadable: the record task says so
                run = None
            print(json.dumps({"op": "champion", "run": run}), file=replies, flush=True)
            continue
        batch, until = [request], time.monotonic() + GATHER_S
        while not batch[-1].get("final"):
            try:
                following = requests.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if following["op"] != "commit":
                held.append(following)
                break
            batch.append(following)
        try:
            if sources is None:  # data sources (`dvc add`) to commit with the stages reading them?
                with Repo(str(root)) as repo:  # (looking costs ~0.15 s a stage; asked once)
                    sources = any(stage.is_data_source for stage in repo.index.stages)
            targets = [stage for each in batch for stage in each["stages"]]
            if targets:
                commit_stages(root, targets, sources=sources)
            reply: dict = {"op": "commit", "ok": True}
        except Exception as exc:  # noqa: BLE001 - DVC's message goes back to the run
            reply = {"op": "commit", "ok": False, "error": str(exc) or type(exc).__name__}
        passes += 1
        reply["pass"] = passes
        for _ in batch:  # one answer per request
            print(json.dumps(reply), file=replies, flush=True)
        gc.collect()  # the batch's Repo and stage index, between batches rather than during them


def main() -> None:
    import signal

    # Started in its own process group, so the terminal's Ctrl-C does not reach it; a SIGINT sent to
    # it alone is ignored too: the run stops the worker itself (close()), after the commit it is
    # making, so that dvc.lock is never left half written
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the answers' own channel...
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # ...so nothing DVC prints can garble them
    try:
        os.nice(19)  # the run's own work first: the worker takes what CPU the run leaves idle
    except OSError:
        pass
    _work(Path(sys.argv[1]), replies)
    replies.close()
    os._exit(0)  # nothing left to tear down: DVC's modules and caches go with the process


if __name__ == "__main__":
    main()
