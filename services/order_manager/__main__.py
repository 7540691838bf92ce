"""Start the order manager: ``python -m services.order_manager``."""

from services.order_manager.service import OrderManagerService

if __name__ == "__main__":
    OrderManagerService.main("order-manager")
