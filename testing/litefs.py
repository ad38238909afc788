"""The LiteFS cluster lives in production code (drillbook.tasks.litefs.cluster), where the drill uses it; tests import it from here."""

from drillbook.tasks.litefs.cluster import (
    HOST,
    PROBE_DB,
    ClusterUnavailable,
    LiteFSCluster,
    Node,
    Position,
    free_port,
    litefs_cluster,
    mounted,
    node_config,
    unmount,
)

__all__ = [
    "HOST",
    "PROBE_DB",
    "ClusterUnavailable",
    "LiteFSCluster",
    "Node",
    "Position",
    "free_port",
    "litefs_cluster",
    "mounted",
    "node_config",
    "unmount",
]
