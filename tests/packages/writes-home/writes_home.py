"""The module of the writes-home fixture project."""

VALUE = 1
