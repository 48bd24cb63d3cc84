"""Helpers to start and stop real peers (threads and processes) on free loopback ports."""

from tests.peers.net import free_port, wait_http, wait_port
from tests.peers.process import ManagedProcess, dui_gateway_cmd
from tests.peers.sandbox import ReceiptCollector, SandboxClient, sandbox_process, sandbox_thread

__all__ = [
    "ManagedProcess",
    "ReceiptCollector",
    "SandboxClient",
    "dui_gateway_cmd",
    "free_port",
    "sandbox_process",
    "sandbox_thread",
    "wait_http",
    "wait_port",
]
