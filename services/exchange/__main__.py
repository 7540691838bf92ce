"""Start the paper exchange: ``python -m services.exchange``."""

from services.exchange.service import main

if __name__ == "__main__":
    main()
