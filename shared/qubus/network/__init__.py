"""The network layer: QPUs joined by entanglement links, and tasks cut across them.

Link topology and Werner-state physics (``links``), partitioning a circuit's qubits across
nodes (``partition``), running a split circuit over EPR pairs as one simulation
(``distributed``), and deciding whether and how to split a task (``splitplan``). It imports
every layer below it: bus, circuits, devices and scheduling.
"""
