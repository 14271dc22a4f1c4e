"""Runs on builders: stdlib only, Python 2.7 and 3.4+, shipped as flat files beside ``agent.py``."""
