"""The module of the hangs fixture project."""

VALUE = 1
