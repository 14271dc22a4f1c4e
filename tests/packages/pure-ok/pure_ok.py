"""A pure Python module: its wheel is py3-none-any."""


def greet(name):
    return "hello " + name
