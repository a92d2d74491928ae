"""Reporting: figures and tables of runs and evaluations."""
