"""Start the market-data feed: ``python -m services.market_data``."""

from services.market_data.service import MarketDataService

if __name__ == "__main__":
    MarketDataService.main("market-data")
