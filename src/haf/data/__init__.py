"""Data contracts shared by the stages (fold inputs for fusion methods)."""
