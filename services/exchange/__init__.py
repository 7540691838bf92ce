"""The paper exchange: the stand-in for the real broker's server (simulated market, matching, accounts)."""
