"""The devices layer: emulated QPUs built from real calibration data.

Device profiles, compilation onto a device, noise prediction and noisy emulation, fidelity
arithmetic, calibration drift, background load, and the sandbox's ideal evaluation. It imports
the bus and circuits layers.
"""
