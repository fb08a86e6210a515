"""The deployable qubus services, one package each; run one with ``qubus service NAME``."""

SERVICES = (
    "ingestion",
    "parser",
    "logic",
    "sandbox",
    "noise",
    "fusion",
    "allocator",
    "qpu",
    "link",
)
