"""Layers shared by the model families and the flows: mixed precision, masked layers."""
