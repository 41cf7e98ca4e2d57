"""transferlab.train (in progress)."""
