"""A simulated Asterisk 22 (ARI + AMI) for tests and ``liyi demo``.

Usage::

    sim = AsteriskSimulator(prompt_seconds=0.2)
    sim.add_agent("agent1", script=AgentScript(answer_after=1.0))
    sim.customer("13800138000", answer_after=2.0)      # reached as PJSIP/13800138000@trunk
    await sim.start()            # ARI at sim.ari_url, AMI at sim.ami_port
    call = await sim.place_call("13800000000", script=CallerScript(hang_up_after_connected=5))
    await call.ended.wait()
    assert not call.silences(min_seconds=2.0)
    await sim.stop()

Callers press keys in answer to prompts and type numbers::

    CallerScript(
        keys_on={"menu-main": "2", "callback-offer": "1", "callback-enter": "13900139000#"},
        keys_at=((3.0, "0"),),          # seconds after the answer, keys
        says_name_seconds=1.2,          # speaks into a recording, then presses ends_name_with ("#")
    )

``keys_on`` keys are typed ``key_delay`` (0.3 s) after the named prompt
(``sound:liyi/<name>``, matched by its last path segment) finished playing to
the caller, one key per ``key_interval`` (0.2 s); a tuple value answers the
1st, 2nd, ... time the prompt plays. What a caller pressed is in
``call.pressed``; what they heard in ``call.heard`` (prompts, including
``recording:<name>`` when a stored recording is played to them, ``beep``,
``recording-started``/``-stopped``, music, agents).

Customers (callbacks, R8): an originate to ``PJSIP/<number>@trunk`` (or
``@carrier``, the trunk of ``asterisk-conf/pjsip.conf``) reaches the customer
scripted with ``sim.customer(number, answer_after=..., hang_up_after=...,
busy=..., script=CallerScript(...))``; an unscripted number rings until the
originate ``timeout`` (ChannelDestroyed cause 19). Each such leg is a
``SimCall`` with ``kind == "customer"`` in ``sim.customer_calls`` /
``sim.calls_to(number)``; it enters Stasis with the originate's ``appArgs``.

Recordings: ``POST /channels/{id}/record`` records the person on the channel
(see ``AsteriskSimulator.record``); finished ones are in
``sim.stored_recordings`` and served by ``/recordings/stored``. Agent legs
note the prompts played to them in ``AgentLeg.heard``.

It behaves like the real Asterisk 22.10.1 recorded in ``tests/traces/`` as an
app with the default subscription sees it; see ``core`` for the list of
recorded behaviours it reproduces.
"""

from ari_handlers.simulator.core import AriError, AsteriskSimulator
from ari_handlers.simulator.scripts import (
    AgentLeg,
    AgentScript,
    CallerScript,
    CustomerScript,
    Heard,
    SimCall,
)

__all__ = [
    "AgentLeg",
    "AgentScript",
    "AriError",
    "AsteriskSimulator",
    "CallerScript",
    "CustomerScript",
    "Heard",
    "SimCall",
]
