"""The risk guard process: approves or refuses each order, keeps the trading state and the kill switch."""
