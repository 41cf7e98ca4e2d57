"""transferlab.scaling (in progress)."""
