"""Broker clients: one interface, one implementation per broker (paper exchange now, KIS later)."""
