"""Start the paper exchange: ``python -m services.exchange``."""

from services.exchange.service import ExchangeService

if __name__ == "__main__":
    ExchangeService.main()
