"""Local simulators of external systems (real servers on loopback) for the demo and the tests.

- :class:`SandboxReceiver`: an HTTP receiver that records what it gets, deduplicates by
  ``Idempotency-Key``, verifies Standard Webhooks signatures when given secrets, can answer
  "accepted, receipt later" and then POST signed receipts, and can inject faults
  (``dui-gateway sandbox --port N [--webhook-secret env:NAME] [--receipt-url URL]``).
"""

from connectors.sandbox.receiver import SandboxReceiver, sandbox_secrets

__all__ = ["SandboxReceiver", "sandbox_secrets"]
