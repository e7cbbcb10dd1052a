"""One module per way of solving."""
