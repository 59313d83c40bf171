"""A simulated Asterisk 22 (ARI + AMI) for tests and ``liyi demo``.

Usage::

    sim = AsteriskSimulator(prompt_seconds=0.2)
    sim.add_agent("agent1", script=AgentScript(answer_after=1.0))
    await sim.start()            # ARI at sim.ari_url, AMI at sim.ami_port
    call = await sim.place_call("13800000000", script=CallerScript(hang_up_after_connected=5))
    await call.ended.wait()
    assert not call.silences(min_seconds=2.0)
    await sim.stop()

It behaves like the real Asterisk 22.10.1 recorded in ``tests/traces/`` as an
app with the default subscription sees it; see ``core`` for the list of
recorded behaviours it reproduces.
"""

from ari_handlers.simulator.core import AriError, AsteriskSimulator
from ari_handlers.simulator.scripts import AgentLeg, AgentScript, CallerScript, Heard, SimCall

__all__ = ["AgentLeg", "AgentScript", "AriError", "AsteriskSimulator", "CallerScript", "Heard", "SimCall"]
