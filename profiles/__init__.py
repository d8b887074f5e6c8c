"""Citizen profiles (民政档案): ID numbers, caller numbers, the profile model, keys, access rules and import."""
