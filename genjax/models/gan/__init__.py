"""Generative adversarial networks: networks (MLP, DCGAN, conditional), the family, latent tools."""
