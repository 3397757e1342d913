"""Helpers shared by more than one test tier (unit, integration, reliability)."""
