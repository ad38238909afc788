"""drillbook's library: one plain function per drill step, and the models they return."""

__version__ = "0.1.0"
