"""Start one node's workers from the WorldPlan and supervise them until the job ends, leaving nothing behind.

Rules: each worker runs in its own process group; the first worker to exit non-zero ends the job (the others get
SIGTERM, then SIGKILL after the grace period); SIGINT/SIGTERM/SIGHUP/SIGQUIT to the launcher are forwarded and end
it the same way; whatever ends the job, every process it started is gone when `run()` returns. If the supervisor
itself is killed outright (SIGKILL), its watchdog (watchdog.py), started before any worker, kills what is left of
the job. With a progress watch (--hang-timeout) each worker gets a progress slot, read on every pass of the loop;
when the watch says the job hangs, every rank's stack is collected for it and the job is stopped like a failure,
with exit code EXIT_HANG. With a live view (--live) each worker gets a slot too, and every pass of the loop shows
the view each rank's process and progress (a local view draws them; a node agent's relays them); with a screen the
workers' output goes to it instead of the console.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Protocol

from dsrun.console import say
from dsrun.errors import UsageError
from dsrun.exit_codes import HANG, PREEMPTED
from dsrun.launcher.live.rows import RankSeen
from dsrun.launcher.node import proctree, watchdog
from dsrun.launcher.node.output import OutputRouter, Screen
from dsrun.launcher.node.progress import PROGRESS_ENV, ProgressBoard, ProgressWatch
from dsrun.launcher.node.stacks import ANNOUNCE, STACK_SIGNAL, collect_stacks, dump_stacks
from dsrun.launcher.plan.world import RankPlan

# What signal.signal returns and takes back: a handler function, SIG_DFL/SIG_IGN, or None (set outside Python).
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
REAP_SECONDS = 1.0  # how often a long job collects exit statuses of orphans re-parented to us (and reads progress)
EXIT_HANG = HANG


def exit_code_of(returncode: int) -> int:
    """Popen's -N for "killed by signal N" becomes the shell's 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} (exit code {128 - returncode})"
    if returncode == PREEMPTED:
        return f"exit code {returncode}: stopped on SIGTERM after saving a checkpoint"
    return f"exit code {returncode}"


class LiveRows(Protocol):
    def show(self, seen: dict[int, RankSeen], now: float) -> None:
        """Every rank as the supervisor sees it at `now` (time.monotonic)."""
        ...


@dataclass
class Failure:
    rank: int
    host: str
    returncode: int


@dataclass
class Outcome:
    exit_code: int
    failure: Failure | None  # the first worker that failed, if one did
    signal: int | None  # the signal that stopped the launcher, if one did
    leftovers: int  # processes still around after the workers ended, which we killed
    hung: bool = False  # the progress watch found the job hanging and it was stopped


class Supervisor:
    def __init__(
        self,
        ranks: list[RankPlan],
        *,
        shutdown_timeout: float = 10.0,
        console: bool = True,
        log_dir: Path | None = None,
        base_env: dict[str, str] | None = None,
        label=lambda rank: f"rank {rank}",
        notify=say,
        watch: ProgressWatch | None = None,
        live: LiveRows | None = None,
        screen: Screen | None = None,
    ):
        self.ranks = ranks
        self.shutdown_timeout = shutdown_timeout
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.output = OutputRouter(console=console, log_dir=log_dir, label=label, screen=screen)
        self.notify = notify
        self.procs: dict[int, subprocess.Popen] = {}
        self.codes: dict[int, int] = {}
        self._signal: int | None = None
        self._signal_count = 0
        self._stacks_asked = False
        self._pidfds: dict[int, int] = {}
        self.watch = watch
        self.live = live
        self._board: ProgressBoard | None = None
        self._collect_asked = False
        self._hung = False
        self.token = watchdog.new_token()
        self._watchdog: watchdog.Watchdog | None = None

    # -- signals -------------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame) -> None:
        self._signal_count += 1
        if self._signal is None:
            self._signal = signum
        if self._signal_count > 1:  # asked twice: stop waiting for a graceful end
            self._kill_everything(signal.SIGKILL)

    def _on_stack_signal(self, _signum: int, _frame) -> None:
        self._stacks_asked = True  # acted on in the main loop, not inside the handler

    def request_stacks(self) -> None:
        """From another thread (the agent's): collect every rank's stack for the watch; the job goes on."""
        self._collect_asked = True
        try:
            os.write(self._wakeup_write, b"\0")  # wake the main loop now rather than after its next timeout
        except (AttributeError, OSError):
            pass  # not running yet, or already ended: the flag is seen on the next pass if there is one

    def _install_handlers(self) -> dict[int, Handler]:
        previous: dict[int, Handler] = {}
        for sig in FORWARDED_SIGNALS:
            previous[sig] = signal.signal(sig, self._on_signal)
        previous[STACK_SIGNAL] = signal.signal(STACK_SIGNAL, self._on_stack_signal)
        # A signal also writes a byte here, which wakes the select() in _wait_for_news at once.
        self._wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_write = wakeup_write
        self._previous_wakeup = signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
        return previous

    def _close_wakeup(self) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        for fd in (self._wakeup_read, self._wakeup_write, *self._pidfds.values()):
            os.close(fd)
        self._pidfds.clear()
        if self._board is not None:
            self._board.close()

    def _wait_for_news(self) -> None:
        """Sleep until a worker exits or a signal arrives (pidfds + the signal wakeup pipe), at most REAP_SECONDS.

        Blocking instead of polling makes a job end the moment its last worker does.
        """
        watched = [self._pidfds[rank] for rank in self._running()]
        ready, _, _ = select.select([self._wakeup_read, *watched], [], [], REAP_SECONDS)
        if self._wakeup_read in ready:
            while True:
                try:
                    if not os.read(self._wakeup_read, 512):
                        break
                except BlockingIOError:
                    break
        proctree.reap_orphans(self._own_children())

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def _own_children(self) -> set[int]:
        """The children we wait for ourselves (with Popen), not to be reaped as orphans."""
        pids = {p.pid for p in self.procs.values()}
        if self._watchdog is not None:
            pids.add(self._watchdog.pid)
        return pids

    def _descendants(self) -> list:
        """Every process of the job; the watchdog is not one (it must outlive the teardown, to exit on its own)."""
        procs = proctree.descendants()
        if self._watchdog is None:
            return procs
        return [proc for proc in procs if proc.pid != self._watchdog.pid]

    def _start(self) -> None:
        me = os.getpid()
        try:
            self._watchdog = watchdog.Watchdog(self.token)
        except OSError as err:
            raise UsageError(f"cannot start the job's watchdog: {err.strerror or err}") from None
        if self.watch is not None or self.live is not None:
            self._board = ProgressBoard([plan.rank for plan in self.ranks])
        for plan in self.ranks:
            self.output.open_log(plan.rank)
            try:
                self.procs[plan.rank] = subprocess.Popen(
                    plan.command,
                    env=self._env(plan),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    process_group=0,
                    preexec_fn=proctree.make_child_setup(me, plan.cores),
                    pass_fds=self._board.pass_fds(plan.rank) if self._board is not None else (),
                )
            except OSError as err:
                raise UsageError(f"cannot start rank {plan.rank}: {plan.command[0]}: {err.strerror or err}") from None
            self._watchdog.record_group(self.procs[plan.rank].pid)  # a worker leads its own process group
            self._pidfds[plan.rank] = os.pidfd_open(self.procs[plan.rank].pid)
        # Threads start only after every fork: preexec_fn is unsafe once other threads exist.
        for rank, proc in self.procs.items():
            if proc.stdout is None or proc.stderr is None:
                raise RuntimeError(f"rank {rank} was started without its output pipes")
            self.output.follow(rank, proc.stdout, 1)
            self.output.follow(rank, proc.stderr, 2)

    def _env(self, plan: RankPlan) -> dict[str, str]:
        env = {**self.base_env, **plan.env}
        # A dsrun started inside a watched worker must not let its own workers write into that worker's slot.
        env.pop(PROGRESS_ENV, None)
        # Every process the worker starts inherits the token: that is how the watchdog finds them.
        env[watchdog.JOB_TOKEN_ENV] = watchdog.token_value(env.get(watchdog.JOB_TOKEN_ENV), self.token)
        if self._board is not None:
            env.update(self._board.env(plan.rank))
        return env

    def _poll(self) -> Failure | None:
        first = None
        for plan in self.ranks:
            if plan.rank in self.codes:
                continue
            code = self.procs[plan.rank].poll()
            if code is None:
                continue
            self.codes[plan.rank] = code
            if code != 0 and first is None:
                first = Failure(plan.rank, plan.host, code)
        return first

    def _collect_stacks(self) -> None:
        if self.watch is not None:
            self.watch.stacks(collect_stacks({rank: self.procs[rank].pid for rank in self._running()}, self.output))

    def _hangs(self) -> bool:
        """Read every running rank's progress and ask the watch; on a hang, collect the stacks for it."""
        if self.watch is None or self._board is None:
            return False
        running = set(self._running())
        steps = {rank: step for rank, step in self._board.read().items() if rank in running}
        if not self.watch.tick(steps, time.monotonic()):
            return False
        self._hung = True
        self._collect_stacks()
        return True

    def _show_live(self) -> None:
        if self.live is None or self._board is None:
            return
        progress = self._board.read_all()
        self.live.show({rank: RankSeen(proc.pid, self.codes.get(rank), progress[rank])
                        for rank, proc in self.procs.items()}, time.monotonic())

    def _running(self) -> list[int]:
        return [rank for rank in self.procs if rank not in self.codes]

    def _signal_tree(self, tree: list, sig: int) -> None:
        """Each running worker's process group, then the descendants that left those groups: every process gets
        the signal once (a second SIGTERM can interrupt a worker's handler half-way through)."""
        groups = set()
        for rank in self._running():
            groups.add(self.procs[rank].pid)  # a worker leads its own process group
            proctree.signal_group(self.procs[rank].pid, sig)
        proctree.signal_all(proctree.outside_groups(tree, groups), sig)

    def _kill_everything(self, sig: int) -> None:
        self._signal_tree(self._descendants(), sig)

    def _teardown(self, sig: int) -> None:
        """Signal every worker group and every descendant, wait out the grace period, then SIGKILL the rest."""
        tree = self._descendants()
        self._signal_tree(tree, sig)
        workers = self._own_children()
        left = proctree.wait_gone(tree, self.shutdown_timeout, workers, tick=self._poll)
        if left:
            name = signal.Signals(sig).name
            self.notify(f"{len(left)} process(es) alive {self.shutdown_timeout:g} s after {name}: sending SIGKILL")
            self._kill_everything(signal.SIGKILL)
            proctree.wait_gone(left, 5.0, workers, tick=self._poll)
        for proc in self.procs.values():
            proc.wait()
        self._poll()

    def _clean_leftovers(self) -> int:
        """Kill what the workers left running behind them (daemons, orphaned helpers)."""
        left = proctree.alive(self._descendants())
        if left:
            self.notify(f"workers left {len(left)} process(es) behind; stopping them")
            self._teardown(signal.SIGTERM)
        proctree.reap_orphans(self._own_children())
        return len(left)

    def run(self) -> Outcome:
        proctree.become_subreaper()
        previous = self._install_handlers()
        failure: Failure | None = None
        try:
            self._start()
            while True:
                failure = self._poll()
                self._show_live()
                if failure or self._signal is not None or not self._running() or self._hangs():
                    break
                if self._stacks_asked:
                    self._stacks_asked = False
                    self.notify(ANNOUNCE)
                    dump_stacks({rank: self.procs[rank].pid for rank in self._running()}, self.notify)
                if self._collect_asked:
                    self._collect_asked = False
                    self._collect_stacks()
                self._wait_for_news()
            if self._hung:  # the watch has said why
                self._teardown(signal.SIGTERM)
            elif failure is not None:
                others = len(self._running())
                if others:
                    self.notify(f"rank {failure.rank} on {failure.host} failed ({describe_exit(failure.returncode)});"
                                f" stopping the {others} other running rank(s)")
                self._teardown(signal.SIGTERM)
            elif self._signal is not None:
                self.notify(f"received {signal.Signals(self._signal).name}; stopping all ranks")
                self._teardown(signal.Signals(self._signal))
            leftovers = self._clean_leftovers()
            self._show_live()  # how each rank ended
        finally:
            if self._running():  # an exception of our own: still leave nothing behind
                self._kill_everything(signal.SIGKILL)
            self.output.close()
            self._close_wakeup()
            if self._watchdog is not None:
                self._watchdog.finish()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._hung:
            return Outcome(EXIT_HANG, None, None, leftovers, hung=True)
        if self._signal is not None:
            if self.codes and all(code == PREEMPTED for code in self.codes.values()):
                # Every rank saved a checkpoint and stopped (checkpoint.save_dir): a clean, resumable end.
                return Outcome(PREEMPTED, failure, self._signal, leftovers)
            return Outcome(128 + self._signal, failure, self._signal, leftovers)
        if failure is not None:
            return Outcome(exit_code_of(failure.returncode), failure, None, leftovers)
        return Outcome(0, None, None, leftovers)
