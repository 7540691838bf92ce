"""The supervisor process: agents' lifecycle, health of the stack, the trading day's close and roll."""
