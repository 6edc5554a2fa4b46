"""What the tutorials work out by hand, computed for any network: layer arithmetic, class images, saliency."""

from lightning_cnn.analysis.table import explain_json, explain_markdown
from lightning_cnn.analysis.trace import LayerRow, Trace, UntraceableNetworkError, trace_network

__all__ = ["LayerRow", "Trace", "UntraceableNetworkError", "explain_json", "explain_markdown", "trace_network"]
