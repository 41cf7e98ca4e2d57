"""transferlab.measures (in progress)."""
