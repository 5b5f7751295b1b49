"""The documents MC services exchange: user profiles (24.484) and the info bodies of
REGISTER and service requests (mcptt-info, mcdata-info, mcvideo-info), parsed safely.

The modules are public as modules (``profile.render``, ``mcx_info.parse``): each
has its own ``render`` and ``parse``.
"""

from . import mcx_info
from . import profile
from .mcx_info import ServiceInfo
from .mcx_info import ServiceInfoFormat
from .profile import PartnerSystem
from .profile import UserProfile
from .xmlsafe import MAX_XML_BYTES
from .xmlsafe import XmlError
from .xmlsafe import parse_xml

__all__ = [
    "MAX_XML_BYTES", "PartnerSystem", "ServiceInfo", "ServiceInfoFormat", "UserProfile",
    "XmlError", "mcx_info", "parse_xml", "profile",
]
