"""Offline training and evaluation of encoders from recorded sessions."""
