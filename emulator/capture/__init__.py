"""Captures: tcpdump on the run's addresses or an application-level tap, pcapng files
with names, step comments and TLS secrets, and reading them back (ladders, diff)."""

from .analysis import Flow
from .analysis import crossings
from .analysis import flows
from .diff import Difference
from .diff import first_difference
from .diff import signature
from .kernel import KernelCapture
from .kernel import kernel_capture_available
from .ladder import RENDERERS
from .ladder import LadderError
from .ladder import LadderMessage
from .ladder import extract
from .ladder import render_html
from .ladder import render_mermaid
from .ladder import render_svg
from .ladder import render_text
from .pcapng import Packet
from .pcapng import read_pcap
from .pcapng import write_pcapng
from .publish import annotate
from .publish import publish
from .tap import TapWriter
from .tap import write_tap_capture
from .tshark import tshark_command

__all__ = [
    "RENDERERS",
    "Difference",
    "Flow",
    "KernelCapture",
    "LadderError",
    "LadderMessage",
    "Packet",
    "TapWriter",
    "annotate",
    "crossings",
    "extract",
    "first_difference",
    "flows",
    "kernel_capture_available",
    "publish",
    "read_pcap",
    "render_html",
    "render_mermaid",
    "render_svg",
    "render_text",
    "signature",
    "tshark_command",
    "write_pcapng",
    "write_tap_capture",
]
