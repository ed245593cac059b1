"""Shared by every stage: file locations, typed parameters, CPU quota, the one image preprocessing."""
