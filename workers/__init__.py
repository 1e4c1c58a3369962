"""The runnable system: the ``modelyard`` CLI, worker / beat / flower launchers, per-process
start-up and the demo. The top layer: imports everything below, nothing imports it."""
