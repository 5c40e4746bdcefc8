"""Capacity and cost report: measured CPU per request x declared sizes x prices."""
