"""Applications built on the library: the command line, the notebook's helpers, the explorer.
Nothing in the library imports from here."""
