"""Tables in a Redis Cluster (``tiemb/enable_distributed``).

Publish a store's tables (:func:`publish_store`, ``tiemb publish``), update
rows under a new version (:func:`update_table`, ``tiemb update``; older
versions' blocks pruned by :func:`prune_versions`), serve
from the cluster with a host tier of the hottest rows (:func:`open_store`,
:class:`DistributedTables`). See README "Distributed tables (Redis Cluster)".
"""

from .publish import (DEFAULT_KEEP_VERSIONS, DistributedError, content_version, current_version, prune_versions,
                      publish_table, resolve_layout, update_table)
from .serving import DistributedTables, host_ids, open_store, read_distributed
from .settings import DEFAULT_BLOCK_ROWS, DistributedSettings, connect
from .store import default_model_name, publish_for_optimize, publish_store, read_store_table

__all__ = ["DistributedError", "DistributedSettings", "DistributedTables", "DEFAULT_BLOCK_ROWS",
           "DEFAULT_KEEP_VERSIONS", "connect", "prune_versions",
           "content_version", "current_version", "default_model_name", "host_ids", "open_store",
           "publish_for_optimize", "publish_store", "publish_table", "read_distributed", "read_store_table",
           "resolve_layout", "update_table"]
