"""Crownscan: crown generation and model-scan segmentation QA for dental labs."""

__version__ = "0.1.0"
