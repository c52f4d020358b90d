"""Scoring masks against labels (pattern Dice at a fixed size) and the printable reports."""
