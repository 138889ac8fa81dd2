"""Training: settings, the shared loop, state/resume, search, losses, and one task per trainer."""
