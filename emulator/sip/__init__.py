"""The SIP core, sans-IO: messages, grammar, framing, transactions, dialogs, registrar.

No sockets, clocks or event loops: bytes and ``now`` go in, events and
bytes to send come out (aioquic's shape).  Import from here, e.g.
``from emulator.sip import Request, TransactionLayer, new_request``.
"""

# First: it decides whether the modules below load compiled (mypyc) or from source.
from . import compiled  # noqa: F401
from .builder import cancel_for
from .builder import new_branch
from .builder import new_call_id
from .builder import new_request
from .builder import new_tag
from .builder import non_2xx_ack
from .dialog import Dialog
from .errors import LocalProtocolError
from .errors import RemoteProtocolError
from .events import Address
from .events import Event
from .events import MessageDropped
from .events import RequestReceived
from .events import ResponseReceived
from .events import TransactionKey
from .events import TransactionTimedOut
from .events import TransportFailed
from .framing import PING
from .framing import PONG
from .framing import KeepAlive
from .framing import StreamFramer
from .headers import BRANCH_MAGIC_COOKIE
from .headers import Contact
from .headers import ContentType
from .headers import CSeq
from .headers import Headers
from .headers import NameAddress
from .headers import Via
from .message import DEFAULT_LIMITS
from .message import ParserLimits
from .message import Request
from .message import Response
from .message import check_request
from .message import check_response
from .message import parse_message
from .multipart import BodyPart
from .multipart import MultipartBody
from .multipart import MultipartError
from .registrar import Binding
from .registrar import LocationService
from .registrar import Registered
from .registrar import RegistrarPolicy
from .registrar import RegistrationRefused
from .registrar import process_register
from .registrar import registered_response
from .status import reason_phrase
from .timers import DEFAULT_TIMERS
from .timers import TimerConfig
from .transaction import State
from .transaction import TransactionLayer
from .uri import URI
from .uri import URIError

__all__ = [
    "BRANCH_MAGIC_COOKIE", "DEFAULT_LIMITS", "DEFAULT_TIMERS", "PING", "PONG", "URI", "Address",
    "Binding", "BodyPart", "CSeq", "Contact", "ContentType", "Dialog", "Event", "Headers",
    "KeepAlive", "LocalProtocolError", "LocationService", "MessageDropped", "MultipartBody",
    "MultipartError", "NameAddress", "ParserLimits", "Registered", "RegistrarPolicy",
    "RegistrationRefused", "RemoteProtocolError", "Request", "RequestReceived", "Response",
    "ResponseReceived", "State", "StreamFramer", "TimerConfig", "TransactionKey",
    "TransactionLayer", "TransactionTimedOut", "TransportFailed", "URIError", "Via",
    "cancel_for", "check_request", "check_response", "new_branch", "new_call_id", "new_request",
    "new_tag", "non_2xx_ack", "parse_message", "process_register", "reason_phrase",
    "registered_response",
]
