"""After the migration: removing the personal data cardbridge no longer needs (`flask purge`)."""
