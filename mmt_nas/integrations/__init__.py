"""Integrations with search frameworks (Optuna, PyTorch supernets)."""
