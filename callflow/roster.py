"""Which agent gets the next call: the longest-idle one whose phone can ring.

Pure bookkeeping shared by all calls (the per-call engines ask through
``RequestAgent``). An agent can be offered a call only when their SIP phone is
registered, not busy on another call (device state), and not already offered
or talking through us. An agent who let a call ring out goes to the back of
the line: their idle time restarts when the offer ends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

FREE_DEVICE_STATES = frozenset({"NOT_INUSE", "UNKNOWN"})


@dataclass(frozen=True, slots=True)
class AgentStatus:
    name: str
    endpoint: str
    registered: bool = False
    device_state: str = "UNKNOWN"
    engaged_by: str | None = None  # call id holding this agent (offered or talking)
    idle_since: float = 0.0
    wrap_up_until: float = 0.0  # after a conversation: notes and follow-ups, no new call (R5)

    def in_wrap_up(self, now: float) -> bool:
        return self.engaged_by is None and now < self.wrap_up_until

    @property
    def free(self) -> bool:
        return self.registered and self.engaged_by is None and self.device_state in FREE_DEVICE_STATES


class Roster:
    """The agents and their availability; not thread-safe, owned by one event loop."""

    def __init__(self, agents: list[tuple[str, str]], *, assume_registered: bool = False,
                 now: float = 0.0) -> None:
        self._agents: dict[str, AgentStatus] = {
            name: AgentStatus(name, endpoint, registered=assume_registered, idle_since=now)
            for name, endpoint in agents
        }

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._agents.values()))

    def get(self, name: str) -> AgentStatus | None:
        return self._agents.get(name)

    def by_endpoint(self, endpoint: str) -> AgentStatus | None:
        """Match ``PJSIP/agent1`` or plain ``agent1`` (AMI speaks of both)."""
        for agent in self._agents.values():
            if agent.endpoint == endpoint or agent.endpoint.split("/", 1)[-1] == endpoint:
                return agent
        return None

    def phone_state(self, endpoint: str, *, registered: bool | None = None,
                    device_state: str | None = None) -> AgentStatus | None:
        agent = self.by_endpoint(endpoint)
        if agent is None:
            return None
        agent = replace(
            agent,
            registered=agent.registered if registered is None else registered,
            device_state=agent.device_state if device_state is None else device_state,
        )
        self._agents[agent.name] = agent
        return agent

    def pick(self, call_id: str, *, skip: tuple[str, ...] = (), only: tuple[str, ...] = (),
             now: float) -> AgentStatus | None:
        """Engage the longest-idle free agent not in ``skip`` (and in ``only``, if given) for ``call_id``."""
        candidates = [a for a in self._agents.values()
                      if a.free and a.wrap_up_until <= now and a.name not in skip
                      and (not only or a.name in only)]
        if not candidates:
            return None
        best = min(candidates, key=lambda a: (a.idle_since, a.name))
        self._agents[best.name] = replace(best, engaged_by=call_id)
        return self._agents[best.name]

    def engage(self, name: str, *, call_id: str) -> bool:
        """Mark ``name`` as on ``call_id`` whatever their phone looked like: a call taken back
        after a restart already has them talking (issue 9). False for an unknown agent."""
        agent = self._agents.get(name)
        if agent is None:
            return False
        self._agents[name] = replace(agent, engaged_by=call_id)
        return True

    def release(self, name: str, *, call_id: str, now: float, wrap_up_seconds: float = 0.0,
                served: bool = True) -> None:
        """Free an agent; after a conversation they first have their wrap-up time.

        Idle time counts from the end of the wrap-up, so longest-idle-first
        stays fair to an agent who just finished a call. An agent who
        answered for a caller who was gone before they were in the bridge
        (``served=False``) served nobody: they keep their place in line.
        """
        agent = self._agents.get(name)
        if agent is None or agent.engaged_by != call_id:
            return
        if not served:
            self._agents[name] = replace(agent, engaged_by=None)
            return
        until = now + max(0.0, wrap_up_seconds)
        self._agents[name] = replace(agent, engaged_by=None, idle_since=until, wrap_up_until=until)

    def free_count(self, now: float | None = None) -> int:
        return sum(1 for a in self._agents.values()
                   if a.free and (now is None or a.wrap_up_until <= now))

    def staffed(self, only: tuple[str, ...] = ()) -> int:
        """Agents signed in (phone registered) for a queue: who will serve its callers."""
        return sum(1 for a in self._agents.values() if a.registered and (not only or a.name in only))
