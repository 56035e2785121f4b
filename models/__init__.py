"""SQLAlchemy 2 typed models, one module per aggregate; import from here."""

from models.customers import STATUSES, Customer, MigratedCard
from models.emails import Bounce, Email, EmailClaim, SendBucket, Wave
from models.events import AuditEvent, CustomerEvent, StripeEvent
from models.imports import ImportRun
from models.links import Link
from models.payments import SavedPaymentMethod
from models.staff import ROLES, ApiToken, StaffUser

__all__ = [
    "ROLES",
    "ApiToken",
    "StaffUser",
    "STATUSES",
    "AuditEvent",
    "Customer",
    "CustomerEvent",
    "ImportRun",
    "Link",
    "MigratedCard",
    "SavedPaymentMethod",
    "StripeEvent",
    "Bounce", "Email", "EmailClaim", "SendBucket", "Wave",
]
