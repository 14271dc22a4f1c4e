"""Runs on builders: stdlib only, Python 2.7 and 3.4+; every other module here is shipped, flat,
into one folder of each builder (``agent.MODULES``), so no module may take a stdlib module's name."""
