"""Autoregressive models: NADE, MADE, PixelCNN and Gated PixelCNN."""
