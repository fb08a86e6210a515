"""The scheduling layer: which QPU runs each task, and how that choice learns from outcomes.

The hyper-score and its weights (``scoring``, ``ahp``, ``weights``, ``tuning``, ``outcomes``),
the placement policies (``allocation``), re-placement and pilots, and the scheduling benchmark
(``schedsim``, ``benchtune``). It imports the bus, circuits and devices layers.
"""
