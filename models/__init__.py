"""SQLAlchemy 2 typed models, one module per aggregate; import from here."""

from models.customers import STATUSES, Customer, MigratedCard
from models.events import AuditEvent, CustomerEvent, StripeEvent
from models.links import Link
from models.payments import SavedPaymentMethod

__all__ = [
    "STATUSES",
    "AuditEvent",
    "Customer",
    "CustomerEvent",
    "Link",
    "MigratedCard",
    "SavedPaymentMethod",
    "StripeEvent",
]
