"""Graph rewriting: find embedding idioms in a GraphDef by structure and
replace them with the fused TiembLookup op."""

from .saved_model import rewrite_saved_model
from .sparse_lookup import rewrite_sparse_lookups

__all__ = ["rewrite_saved_model", "rewrite_sparse_lookups"]
