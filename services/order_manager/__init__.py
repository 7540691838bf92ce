"""The order manager: journal, risk check, broker, order states and events."""
