"""Helpers shared by the tests (not tests themselves): test modules import these, never each other."""
