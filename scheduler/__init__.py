"""eastwest's engine: compile options, solve, verify, read and write files."""
