//! The notifications example: an HTTP front door and an SMS sender that talk through Herald topics.
