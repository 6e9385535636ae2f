"""Energy-based models: Hopfield networks, RBMs, DBNs and DBMs."""
