"""SQLAlchemy 2 typed models, one module per aggregate; import from here."""

from cardbridge.models.customers import STATUSES, Customer, MigratedCard
from cardbridge.models.drift import DriftFinding, DriftScan
from cardbridge.models.emails import Bounce, Email, EmailClaim, SendBucket, Wave
from cardbridge.models.events import AuditEvent, CustomerEvent, StripeEvent
from cardbridge.models.imports import ImportRun
from cardbridge.models.links import Link
from cardbridge.models.payments import SavedPaymentMethod
from cardbridge.models.staff import ROLES, ApiToken, StaffUser
from cardbridge.models.subscriptions import (
    InvoicePayment,
    LegacySubscription,
    PriceMapEntry,
    StripePrice,
)

__all__ = [
    "ROLES",
    "ApiToken",
    "StaffUser",
    "STATUSES",
    "AuditEvent",
    "Customer",
    "CustomerEvent",
    "DriftFinding",
    "DriftScan",
    "ImportRun",
    "Link",
    "MigratedCard",
    "SavedPaymentMethod",
    "StripeEvent",
    "Bounce", "Email", "EmailClaim", "SendBucket", "Wave",
    "InvoicePayment", "LegacySubscription", "PriceMapEntry", "StripePrice",
]
