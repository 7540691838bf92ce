"""Start the risk guard: ``python -m services.risk_guard``."""

from services.risk_guard.service import RiskGuardService

if __name__ == "__main__":
    RiskGuardService.main()
