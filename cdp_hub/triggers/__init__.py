"""Triggers and scenarios: who gets which message, when."""
