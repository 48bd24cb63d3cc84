"""Local simulators of external systems (real servers on loopback) for the demo and the tests.

- :class:`SandboxReceiver`: an HTTP receiver that records what it gets, deduplicates by
  ``Idempotency-Key`` and can inject faults (``dui-gateway sandbox --port N``).
"""

from connectors.sandbox.receiver import SandboxReceiver

__all__ = ["SandboxReceiver"]
