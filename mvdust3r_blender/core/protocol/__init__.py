"""The worker protocol: typed requests and events, one JSON object per line.

Blender (the client) writes requests (:mod:`.requests`) to the worker's stdin; the worker writes
events (:mod:`.events`) to its stdout; :mod:`.wire` turns each into one bounded line and back.
Both processes import this package, so it uses the standard library and the core's option types
alone. ``docs/worker.md`` is the reference for every message.

Every request carries an ``id`` (a string the client picks); every event answering it echoes that
``id``. A request ends with exactly one *final* event (see :data:`.events.FINAL_EVENTS`): ``hello`` →
``hello``, ``load`` → ``loaded``, ``reconstruct`` → ``result``, ``cancel``/``release``/``shutdown``
→ ``ack``, and any of them → ``error`` instead. ``progress`` events may come before the final one.
Events that answer no request (``ready`` at start-up, ``error`` for a line without a usable id)
have ``id`` null.

Decoding is strict for requests (the worker answers a bad one with an ``error`` event naming the
problem) and lenient for events (unknown fields are ignored, so an older client reads a newer
worker's events).
"""
