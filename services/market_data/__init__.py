"""The market-data feed process: broker feed in, bus out, snapshots for late joiners, bars on disk."""
