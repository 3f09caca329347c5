"""Helpers shared by training and inference, below both: the checkpoint file and the mode of atomically written
files. Imports nothing of Hermes but ``Code.errors``."""
