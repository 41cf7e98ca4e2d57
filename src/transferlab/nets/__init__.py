"""transferlab.nets (in progress)."""
