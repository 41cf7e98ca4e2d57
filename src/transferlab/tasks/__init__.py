"""transferlab.tasks (in progress)."""
