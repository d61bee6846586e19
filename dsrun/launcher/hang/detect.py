"""When does a job hang? From every running rank's last optimizer step and when it changed, with the caller's clock.

A rank is stuck when, for the timeout:
- it stayed at a step while another rank was further (the ranks disagree: some at 17, one still at 16); the wait
  counts from when it fell behind, not from its own last step, so a rank that merely finishes a step later than
  the others is not stuck. A rank that reported nothing is behind every rank that did: the rank that never comes
  to the rendezvous while the others wait there is named;
- or it made no progress after its first optimizer step (every rank at 17, none moving), or in the rendezvous.
Once every rank is through the rendezvous and before anyone's first step (JOINED: model and data loading) the job
is never called hung, as start-up may take as long as it needs. When no rank reports anything (a script that does
not use dsrun's runtime) each is only known to be alive. Ranks that ended leave the picture. Pure: no processes, no
clock of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsrun.launcher.node.progress import JOINED, Steps

LEAD_KEPT = 64  # when the leading step first reached each of its recent values; a lagging rank needs one of them


@dataclass
class _Rank:
    step: int | None
    since: float  # when `step` was first seen


@dataclass(frozen=True)
class Hang:
    steps: Steps  # every running rank's last step
    stuck: list[int]  # the ranks that were stuck for the timeout
    waited: dict[int, float] = field(default_factory=dict)  # how long each stuck rank has waited

    @property
    def disagree(self) -> bool:
        return len(set(self.steps.values())) > 1  # a rank that reported nothing disagrees with one that did


class HangDetector:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self._ranks: dict[int, _Rank] = {}
        self._lead: list[tuple[int, float]] = []  # (step, when the furthest rank first reached it), rising steps
        self._first_report: float | None = None  # when some rank first reported anything

    def observe(self, steps: Steps, now: float) -> None:
        """The running ranks' steps as read at `now`; a rank missing from `steps` has ended."""
        for rank in list(self._ranks):
            if rank not in steps:
                del self._ranks[rank]
        for rank, step in steps.items():
            known = self._ranks.get(rank)
            if known is None:
                self._ranks[rank] = _Rank(step, now)
            elif step is not None and step != known.step:
                known.step, known.since = step, now
        self._note_lead(now)

    def _note_lead(self, now: float) -> None:
        top = self._top()
        if top is None:
            return
        if self._first_report is None:
            self._first_report = now
        if self._lead and top < self._lead[-1][0]:  # the leader ended, or steps started again (a new engine)
            self._lead = [entry for entry in self._lead if entry[0] <= top]
        if not self._lead or top > self._lead[-1][0]:
            # After a drop this time is later than the truth: a lagging rank is then called stuck later, never early.
            self._lead.append((top, now))
            del self._lead[:-LEAD_KEPT]

    def _top(self) -> int | None:
        return max((r.step for r in self._ranks.values() if r.step is not None), default=None)

    def _fell_behind(self, step: int) -> float:
        """When the furthest rank first went past `step` (the oldest remembered time if that was long ago)."""
        return next((when for lead, when in self._lead if lead > step), self._lead[0][1])

    def check(self, now: float) -> Hang | None:
        top = self._top()
        if top is None:
            return None
        waited: dict[int, float] = {}
        first_report = self._first_report if self._first_report is not None else now
        for rank, known in self._ranks.items():
            if known.step is None:
                start = max(known.since, first_report)
            elif known.step < top:
                start = max(known.since, self._fell_behind(known.step))
            elif known.step != JOINED:
                start = known.since
            else:
                continue  # everyone through the rendezvous, no one stepped yet: start-up
            if now - start >= self.timeout:
                waited[rank] = now - start
        if not waited:
            return None
        return Hang(steps={rank: known.step for rank, known in sorted(self._ranks.items())}, stuck=sorted(waited),
                    waited=waited)
