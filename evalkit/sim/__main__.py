"""``python -m evalkit.sim``: the local servers in the foreground — the same options as ``evalkit sim``
(both are :func:`evalkit.sim.launch.main`; ``--help`` lists them).

For tests and benchmarks that start it as a subprocess: ``--port 0 --port-file PATH`` writes the bound
port to PATH once it listens (and removes the file at exit). SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

from evalkit.sim.launch import main

if __name__ == "__main__":
    main()
