"""Start the KIS gateway: ``python -m services.kis_gateway`` (the venue when ``broker.kind = "kis"``)."""

from services.kis_gateway.service import main

if __name__ == "__main__":
    main()
