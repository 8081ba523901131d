"""Settings of the distributed tables, from the ``tiemb/*`` parameters.

Defaults (keep in sync with PARAMETERS in tiemb/config.py):

========================================  ==========  ==================================================
parameter                                 default     meaning
========================================  ==========  ==================================================
``tiemb/distributed_address`` (``.s``)    —           ``host:port[,host:port...]``: any nodes of the
                                                      cluster (the rest are found from CLUSTER SLOTS);
                                                      ``TIEMB_REDIS_ADDRESS`` when unset
``tiemb/distributed_namespace`` (``.s``)  ``tiemb``   first part of every key: ``<ns>:<model>:<table>:...``
``tiemb/distributed_timeout_ms``          1000        connect and reply timeout per node
``tiemb/distributed_retries``             5           retries of one batch (reconnect, reload the slot map,
                                                      back off 200 ms doubling up to the timeout) before
                                                      a call fails
``tiemb/refresh_seconds``                 5.0         period of the background check for new versions;
                                                      0: only an explicit ``refresh()``
========================================  ==========  ==================================================
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

from ..config import PARAMETERS

#: Rows per cluster value ("block") unless publish is told otherwise: a miss
#: reads its whole block, so small blocks keep the bytes per miss low while
#: still amortising each key's ~50 bytes of Redis overhead.
DEFAULT_BLOCK_ROWS = 16


@dataclass(frozen=True)
class DistributedSettings:
    """Where and how the tables live in the cluster.

    Attributes:
        address: ``host:port[,host:port...]`` of any cluster nodes.
        namespace: first key part, so that several teams share one cluster.
        timeout_ms: connect and per-reply timeout (milliseconds).
        retries: how often one batch is retried on a lost connection or a
            cluster that is failing over, before the call raises.
        refresh_seconds: period of the serving process's version check; 0 = off.
    """

    address: str
    namespace: str = PARAMETERS["tiemb/distributed_namespace"][1]
    timeout_ms: int = PARAMETERS["tiemb/distributed_timeout_ms"][1]
    retries: int = PARAMETERS["tiemb/distributed_retries"][1]
    refresh_seconds: float = PARAMETERS["tiemb/refresh_seconds"][1]

    def validate(self) -> "DistributedSettings":
        if not isinstance(self.address, str) or not self.address:
            raise ValueError(f"tiemb/distributed_address must be host:port[,host:port...], got {self.address!r}")
        if not isinstance(self.namespace, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.namespace):
            raise ValueError(f"tiemb/distributed_namespace must be letters, digits, '_', '-' or '.', "
                             f"got {self.namespace!r}")
        if isinstance(self.timeout_ms, bool) or not isinstance(self.timeout_ms, int) or self.timeout_ms < 1:
            raise ValueError(f"tiemb/distributed_timeout_ms must be a positive int, got {self.timeout_ms!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"tiemb/distributed_retries must be an int >= 0, got {self.retries!r}")
        if not isinstance(self.refresh_seconds, (int, float)) or self.refresh_seconds < 0:
            raise ValueError(f"tiemb/refresh_seconds must be >= 0, got {self.refresh_seconds!r}")
        return self

    @classmethod
    def from_params(cls, params: dict, address: Optional[str] = None) -> "DistributedSettings":
        """From resolved ``tiemb/*`` values (``OptimizeConfig.resolve()`` or
        a store's saved config); ``address`` overrides theirs."""
        addr = address or params.get("tiemb/distributed_address") or os.environ.get("TIEMB_REDIS_ADDRESS")
        if not addr:
            raise ValueError("tiemb/distributed_address: not set; give host:port[,host:port...] of the cluster's "
                             "nodes (or set TIEMB_REDIS_ADDRESS)")

        def get(key):
            v = params.get(key)
            return PARAMETERS[key][1] if v is None else v

        return cls(addr, get("tiemb/distributed_namespace"), int(get("tiemb/distributed_timeout_ms")),
                   int(get("tiemb/distributed_retries")), float(get("tiemb/refresh_seconds"))).validate()


def connect(settings: DistributedSettings):
    """A cluster client (tiemb._C.ClusterClient) for ``settings``; raises
    ValueError naming the address when it is malformed, unreachable or not a
    cluster, or when this build has no hiredis."""
    from .. import _C

    return _C.ClusterClient(settings.address, settings.timeout_ms, settings.retries)
