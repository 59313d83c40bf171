"""The etiquette engine: how liyi decides what every caller experiences.

How this works: each call has one ``CallEngine`` (``engine.py``), a state
machine fed ``events`` (``StasisStart``, ``PlaybackFinished``, ``TimerFired``…)
that answers with ``commands`` (``Ring``, ``Answer``, ``Play``, ``Dial``…);
its handlers are split by subject — ``core`` (shared state and moves),
``hold`` (R4, R7), ``transfer`` (R6) — but one transition table in
``engine`` decides which runs, and ``keycodes`` turns an agent's phone keys
into the same requests the web panel sends.
It never performs I/O and never reads the clock — every event carries its
time — so each rule of ETIQUETTE.md can be tested in microseconds and a
logged call can be replayed. ``config`` reads and validates the call-flow
settings (rejecting any that would break a rule), ``roster`` chooses the
longest-idle agent, ``facts`` and ``compliance`` turn what happened into the
per-rule record (R12). The controller in ``ari_handlers`` is the only thing
that turns commands into Asterisk requests.
"""
