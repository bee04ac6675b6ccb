"""Reusable contract suites: every registered kind is checked the moment it is registered.

Each ``check_*`` function raises AssertionError on a broken contract; ``tests/contracts`` runs
them over every name in the registries.
"""
