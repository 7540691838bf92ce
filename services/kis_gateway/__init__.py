"""The KIS gateway: the venue process that connects the firm to Korea Investment & Securities (DESIGN 3b)."""
