"""Start the supervisor: ``python -m services.supervisor``."""

from services.supervisor.service import SupervisorService

SupervisorService.main("supervisor")
