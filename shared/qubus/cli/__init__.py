"""The ``qubus`` command line: commands, the HTML report, and the stack ``qubus up`` runs.

The top layer: it may import every other layer and the services (``qubus_services``).
"""
