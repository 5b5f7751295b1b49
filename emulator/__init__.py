"""MCX migration emulator: a network emulator for 3GPP Mission Critical services.

Layers, each importing only those below it (``tests/test_layers.py`` checks):

1. sans-IO cores: :mod:`emulator.sip`, :mod:`emulator.identity`,
   :mod:`emulator.topology`, :mod:`emulator.documents`, :mod:`emulator.capture`
   and :mod:`emulator.refusal`;
2. I/O: :mod:`emulator.transport` (sockets) and :mod:`emulator.keystore` (files);
3. roles: the ``nodes`` package;
4. :mod:`emulator.orchestration`: plans, runner, network, scenarios;
5. the CLI: :mod:`emulator.cli` (``mcx-emulator``, ``run_topology.py``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
