"""transferlab.protocols (in progress)."""
