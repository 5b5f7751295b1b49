"""MCX migration emulator: a network emulator for 3GPP Mission Critical services.

Layers, each importing only those below it (``tests/test_layers.py`` checks):

1. cores, which open no socket and know no role: :mod:`emulator.sip`,
   :mod:`emulator.identity`, :mod:`emulator.documents`, :mod:`emulator.topology`
   and :mod:`emulator.refusal` (strictly sans-IO), and :mod:`emulator.capture`
   (capture files, tcpdump and tshark);
2. I/O: :mod:`emulator.transport` (sockets) and :mod:`emulator.keystore` (files);
3. roles: the ``nodes`` package;
4. :mod:`emulator.orchestration`: plans, runner, network, scenarios;
5. the CLI: :mod:`emulator.cli` (``mcx-emulator``, ``run_topology.py``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
