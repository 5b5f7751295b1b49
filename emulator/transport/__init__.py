"""The only code with sockets: UDP, TCP and TLS adapters (and an in-memory link for tests),
and :class:`SipEndpoint`, which glues a transaction layer to them with one timer."""

from .base import ErrorHandler
from .base import Receiver
from .base import Tap
from .base import Transport
from .endpoint import SipEndpoint
from .endpoint import TransactionUser
from .memory import MemoryHub
from .memory import MemoryTransport
from .stream import StreamTransport
from .tls import client_context
from .tls import server_context
from .udp import UdpTransport

__all__ = [
    "ErrorHandler",
    "MemoryHub",
    "MemoryTransport",
    "Receiver",
    "SipEndpoint",
    "StreamTransport",
    "Tap",
    "TransactionUser",
    "Transport",
    "UdpTransport",
    "client_context",
    "server_context",
]
