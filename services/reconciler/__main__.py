"""Start the reconciler: ``python -m services.reconciler``."""

from services.reconciler.service import ReconcilerService

if __name__ == "__main__":
    ReconcilerService.main()
