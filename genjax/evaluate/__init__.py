"""Likelihood estimators, sample-quality metrics and plots for trained models."""
