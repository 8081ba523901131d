"""Graph rewriting: find embedding idioms in a GraphDef by structure and
replace them with the fused TiembLookup op."""

from .frozen_graph import load_frozen_graph, rewrite_frozen_graph
from .saved_model import rewrite_saved_model
from .sparse_lookup import rewrite_sparse_lookups

__all__ = ["load_frozen_graph", "rewrite_frozen_graph", "rewrite_saved_model", "rewrite_sparse_lookups"]
