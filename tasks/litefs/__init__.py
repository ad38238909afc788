"""LiteFS: the drill cluster drillbook starts on loopback (cluster.py)."""
