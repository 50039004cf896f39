"""Architecture-side modules that strategies train with the architecture parameters (search time
only): GAS's GCN-guided module (``gcn``)."""

from segnas.search.controllers.gcn import GCNGuide

__all__ = ["GCNGuide"]
