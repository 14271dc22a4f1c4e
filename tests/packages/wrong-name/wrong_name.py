"""The module of the wrong-name fixture project."""

VALUE = 1
